#include "dipaco/cmd/pipeline.hpp"

#include <hdf5.h>
#include <mpi.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include "dipaco/cmd/app.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/data/corpus.hpp"
#include "dipaco/dist/fault.hpp"
#include "dipaco/data/features.hpp"
#include "dipaco/io/files.hpp"
#include "dipaco/model/kernels.hpp"
#include "dipaco/dist/memory_estimate.hpp"
#include "dipaco/train/metrics.hpp"
#include "dipaco/data/routed_eval.hpp"
#include "dipaco/io/run_lock.hpp"
#include "dipaco/data/router.hpp"
#include "dipaco/data/shards.hpp"
#include "dipaco/train/trainer.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/h5io.hpp"
#include "dipaco/io/key_lines.hpp"

namespace fs = std::filesystem;

namespace dipaco {

std::string stage_stamp(const Deck& deck, Stage s, const std::string& extra) {
  static const std::set<std::string> warm = {"model.", "run.seed", "route.warm_steps", "train.batch_size", "train.lr",
                                             "train.min_lr_ratio", "train.warmup", "train.micro_batch", "train.weight_decay", "train.beta1",
                                             "train.beta2", "train.eps", "train.grad_clip", "train.precision"};
  static const std::set<std::string> route = {"route.method", "route.routing", "route.prefix_tokens", "route.kmeans_iters",
                                              "route.max_shard_fraction", "route.overlap", "dipaco.modules_per_level"};
  static const std::set<std::string> train = {"train.", "dipaco.", "route.em_rounds", "route.em_candidates", "route.refit", "eval.every", "eval.batches", "fault.drop_outer_prob"};
  static const std::set<std::string> eval = {"eval.reroute_every", "eval.doc_bytes"};
  auto in = [](const std::set<std::string>& set, const std::string& key) {
    for (const auto& k : set)
      if (key == k || (k.back() == '.' && key.rfind(k, 0) == 0)) return true;
    return false;
  };
  std::string out;
  for (const auto& [key, value] : deck.values) {
    bool use = key.rfind("data.", 0) == 0;
    if (s >= Stage::warm_start) use |= in(warm, key);
    if (s >= Stage::route) use |= in(route, key);
    if (s >= Stage::train) use |= in(train, key);
    if (s >= Stage::evaluate) use |= in(eval, key);
    if (use) out += key + " = " + value + "\n";
  }
  return out + extra;
}

std::string stamp_changes(const std::string& before, const std::string& now) {
  auto a = parse_key_lines(before), b = parse_key_lines(now);
  std::vector<std::string> changes;
  for (const auto& [k, v] : b)
    if (!a.count(k) || a[k] != v) changes.push_back(k + ": " + (a.count(k) ? a[k] : std::string("(none)")) + " -> " + v);
  for (const auto& [k, v] : a)
    if (!b.count(k)) changes.push_back(k + " removed");
  std::string out;
  for (const auto& c : changes) out += (out.empty() ? std::string() : std::string(", ")) + c;
  return out;
}

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return in ? s.str() : std::string();
}

// The same text on every rank: rank 0 reads the file and broadcasts it.
std::string read_text_everywhere(const std::string& path) {
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::string s = rank == 0 && fs::exists(path) ? read_text(path) : std::string();
  long n = long(s.size());
  CollectiveScope wait("a broadcast of a file rank 0 read");
  MPI_Bcast(&n, 1, MPI_LONG, 0, MPI_COMM_WORLD);
  s.resize(n);
  MPI_Bcast(s.data(), int(n), MPI_CHAR, 0, MPI_COMM_WORLD);
  return s;
}


void say(int rank, const std::string& line) {
  if (rank != 0) return;
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

// This rank's index among the ranks on its node, and their number (any launcher: mpirun, srun).
std::pair<int, int> node_local_rank() {
  MPI_Comm node;
  watched("splitting the world by node", [&] { MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node); });
  int r, n;
  MPI_Comm_rank(node, &r);
  MPI_Comm_size(node, &n);
  MPI_Comm_free(&node);
  return {r, n};
}

// run.threads = 0: OMP_NUM_THREADS when set, else the node's cores shared by its ranks
// (every rank taking all cores would oversubscribe them).
void set_threads(const Deck& deck, int local_ranks) {
  if (deck.run.threads > 0) omp_set_num_threads(deck.run.threads);
  else if (!std::getenv("OMP_NUM_THREADS")) omp_set_num_threads(std::max(1, omp_get_num_procs() / local_ranks));
}

// ---- warm start: a dense model (one path) on all training documents --------

std::string warm_start_file(const Deck& deck, const std::string& run_dir) {
  return deck.route.warm_start.empty() ? run_dir + "/warmstart.h5" : deck.route.warm_start;
}

bool read_warm_start(const std::string& file, const std::string& stamp, std::vector<float>& params) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return false;
  bool ok = false;
  try {
    if (read_attr_string(f, "stamp") == stamp) read_floats(f, "params", params.size(), params.data(), file), ok = true;
  } catch (const CheckpointError&) {
    ok = false;
  }
  H5Fclose(f);
  return ok;
}

void write_warm_start(const std::string& file, const std::string& stamp, const std::vector<float>& params) {
  const std::string tmp = file + ".tmp";
  hid_t f = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) throw CheckpointError("cannot create " + tmp);
  try {
    write_attr_string(f, "stamp", stamp);
    write_floats(f, "params", params.data(), params.size());
  } catch (...) {
    H5Fclose(f);
    throw;
  }
  if (H5Fclose(f) < 0) throw CheckpointError("writing " + tmp + " failed (disk full?)");
  fs::rename(tmp, file);
}

// Returns false when a stop request ended it early (with a checkpoint: the next run resumes it).
bool warm_start(const Deck& deck, const Split& split, Kernels& k, const std::string& file, const std::string& stamp,
                const std::string& run_dir, int rank, std::vector<float>& params) {
  params.resize(make_layout(model_shape(deck)).total);
  if (deck.route.warm_steps == 0) {
    params = init_params(model_shape(deck), make_layout(model_shape(deck)), deck.run.seed);
    say(rank, "stage warm start: none (route.warm_steps = 0); paths start from the seed's initialisation");
    return true;
  }
  int have = rank == 0 && read_warm_start(file, stamp, params);
  watched("the warm-start broadcast", [&] { MPI_Bcast(&have, 1, MPI_INT, 0, MPI_COMM_WORLD); });
  if (have) {
    watched("the warm-start broadcast", [&] { MPI_Bcast(params.data(), int(params.size()), MPI_FLOAT, 0, MPI_COMM_WORLD); });
    say(rank, "stage warm start: up to date (" + file + ")");
    return true;
  }
  Deck warm_deck = deck;  // one path, no outer rounds, no early stop; checkpointed like training
  warm_deck.dipaco.modules_per_level.assign(deck.dipaco.modules_per_level.size(), 1);
  warm_deck.dipaco.inner_steps = 0;
  warm_deck.dipaco.replica_mode = "data";
  warm_deck.train.steps = int(deck.route.warm_steps);
  warm_deck.train.early_stop = "none";
  warm_deck.run.stop_after = 0;
  std::vector<Shard> train(1), val(1);
  for (const auto& d : split.train) train[0].push_back(&d);
  for (const auto& d : split.val) val[0].push_back(&d);
  Trainer t(warm_deck, MPI_COMM_WORLD, k, train, val, "", rank == 0);
  // Its checkpoints live in <run dir>/warmstart/checkpoints, under the warm start's stamp.
  const std::string ckpt_dir = run_dir + "/warmstart", stamp_file = ckpt_dir + "/stamp";
  if (read_text_everywhere(stamp_file) != stamp && rank == 0) {
    fs::remove_all(ckpt_dir);
    fs::create_directories(ckpt_dir);
    write_file_atomic(stamp_file, stamp);
  }
  Checkpointer ckpt(warm_deck, ckpt_dir, MPI_COMM_WORLD);
  const std::string resumed = ckpt.load(t, "auto", false);
  t.set_checkpointer(&ckpt);
  say(rank, "stage warm start: a dense model on all training documents for " + std::to_string(deck.route.warm_steps) +
                " steps" + (resumed.empty() ? "" : ", resumed from " + resumed + " at step " + std::to_string(t.progress().step)));
  TrainSummary s = t.run();
  if (s.stopped) return false;
  k.to_host(params.data(), t.paths()[0].params.get(), params.size() * sizeof(float));
  if (rank == 0) write_warm_start(file, stamp, params);
  watched("the barrier after writing the warm start", [] { MPI_Barrier(MPI_COMM_WORLD); });
  if (rank == 0) fs::remove_all(ckpt_dir);  // warmstart.h5 replaces its checkpoints
  if (rank == 0)
    std::printf("stage warm start: done in %s, validation bpb %.4f -> %s\n", format_duration(s.wall_seconds).c_str(),
                s.final_eval.bpb, file.c_str());
  return true;
}

// ---- route: shards from a rule or from k-means on prefix features ----------

std::vector<float> doc_features(FeatureModel& fm, const std::vector<Document>& docs, int prefix) {
  std::vector<FeatureWindow> w;
  for (const auto& d : docs) w.push_back({&d, 0});
  return fm.features(w, prefix, MPI_COMM_WORLD);
}

std::vector<int> nearest_paths(const Router& r, const std::vector<float>& f) {
  std::vector<int> out(f.size() / r.dim);
  for (size_t i = 0; i < out.size(); ++i) out[i] = r.nearest_path(&f[i * r.dim]);
  return out;
}

std::vector<std::vector<int>> single(const std::vector<int>& path_of_doc) {
  std::vector<std::vector<int>> out;
  for (int p : path_of_doc) out.push_back({p});
  return out;
}

ShardFile route_documents(const Deck& deck, const Split& split, FeatureModel& fm, int P) {
  ShardFile s;
  if (deck.route.method != "kmeans") {
    s.train = assign_by_rule(split.train, P, deck.route.method);
    s.val = assign_by_rule(split.val, P, deck.route.method);
    return s;
  }
  const int prefix = deck.route.prefix_tokens, C = fm.dim();
  std::vector<float> ft = doc_features(fm, split.train, prefix), fv = doc_features(fm, split.val, prefix);
  fault_point(deck, "route");
  if (split.train.size() < size_t(P))
    throw DeckError(std::to_string(split.train.size()) + " training documents cannot be routed to " + std::to_string(P) + " paths");
  s.has_router = true;
  s.router = fit_router(ft, C, deck.dipaco.modules_per_level, deck.route.routing, deck.run.seed, deck.route.kmeans_iters);
  std::vector<double> scores(split.train.size() * P);
  for (size_t i = 0; i < split.train.size(); ++i) s.router.path_scores(&ft[i * C], &scores[i * P]);
  s.train = by_path(assign_paths(scores, split.train.size(), P, deck.route.max_shard_fraction, deck.route.overlap), P);
  s.val = by_path(single(nearest_paths(s.router, fv)), P);
  return s;
}

// Discriminative re-routing: each training document moves to the path with
// the lowest loss on it; the router is refit to that assignment (nearest centroid).
// Only the route.em_candidates paths nearest by the current router are tried.
ShardFile reroute_by_loss(const Deck& deck, const Split& split, Trainer& t, FeatureModel& fm, const Router& now,
                          int round) {
  const int P = t.topology().paths, C = fm.dim();
  const int c = deck.route.em_candidates > 0 ? std::min(deck.route.em_candidates, P) : P;
  std::vector<float> ft = doc_features(fm, split.train, deck.route.prefix_tokens);
  std::vector<std::vector<int>> candidates(split.train.size());
  std::vector<double> score(P);
  for (size_t i = 0; i < split.train.size(); ++i) {
    now.path_scores(&ft[i * C], score.data());
    std::vector<int> order(P);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[a] < score[b]; });
    candidates[i].assign(order.begin(), order.begin() + c);
  }
  std::vector<double> loss = document_losses(t, split.train, candidates);
  auto paths_of_doc = assign_paths(loss, split.train.size(), P, deck.route.max_shard_fraction, deck.route.overlap);
  std::vector<int> primary;
  for (auto& p : paths_of_doc) primary.push_back(p[0]);
  ShardFile s;
  s.round = round, s.has_router = true;
  s.router = deck.route.refit == "logistic" ? refit_router_logistic(ft, C, primary, P) : refit_router(ft, C, primary, P);
  s.train = by_path(paths_of_doc, P);
  s.val = by_path(single(nearest_paths(s.router, doc_features(fm, split.val, deck.route.prefix_tokens))), P);
  return s;
}

std::string shard_file_name(const std::string& run_dir, int round) {
  return run_dir + (round == 0 ? "/shards.h5" : "/shards-r" + std::to_string(round) + ".h5");
}

// Reads a shard file on every rank when it exists with this stamp.
bool load_shards(const std::string& file, const std::string& stamp, const Split& split, ShardFile& out) {
  int ok = 1;
  try {
    if (!fs::exists(file)) ok = 0;
    else out = read_shard_file(file, split), ok = out.stamp == stamp;
  } catch (const CheckpointError&) {
    ok = 0;
  }
  watched("agreeing on the shard file", [&] { MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD); });
  return ok;
}

void save_shards(const std::string& file, ShardFile& s, const std::string& stamp, const Split& split, int rank) {
  s.stamp = stamp;
  if (rank == 0) write_shard_file(file, s, split);
  watched("the barrier after writing the shard file", [] { MPI_Barrier(MPI_COMM_WORLD); });
}

std::string shard_sizes(const Assignment& a) {
  std::string out;
  for (size_t p = 0; p < a.size(); ++p) {
    if (p) out += ' ';
    out += std::to_string(a[p].size());
  }
  return out;
}

std::vector<int> path_of_val(const ShardFile& s, size_t n) {
  std::vector<int> out(n, 0);
  for (size_t p = 0; p < s.val.size(); ++p)
    for (int i : s.val[p]) out[i] = int(p);
  return out;
}

// ---- summary ---------------------------------------------------------------

std::string json_strings(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::string("\"") + json_escape(v[i]) + "\"";
  return out + "]";
}

// Every file of the run directory, summary.json included (about to be written), and the
// warm start when it lives elsewhere.
std::vector<std::string> files_written(const std::string& run_dir, const std::string& warm_file) {
  const std::string summary = (fs::path(run_dir) / "summary.json").string();
  std::vector<std::string> out{summary};
  for (const auto& e : fs::recursive_directory_iterator(run_dir))
    if (e.is_regular_file() && e.path().string() != summary && e.path().filename() != "lock") out.push_back(e.path().string());
  if (!warm_file.empty() && fs::exists(warm_file) &&
      fs::weakly_canonical(warm_file).parent_path() != fs::weakly_canonical(run_dir))
    out.push_back(warm_file);
  std::sort(out.begin(), out.end());
  return out;
}

std::string routed_json(const RoutedEval& r, const Deck& deck) {
  JsonRecord dom;
  for (size_t d = 0; d < r.domains.size(); ++d) dom.add(r.domains[d], r.domain_bpb[d]);
  return JsonRecord()
      .add("val_bpb", r.bpb)
      .add("scored_bytes", r.bytes)
      .add("reroute_every", long(deck.eval.reroute_every))
      .add("routing_decisions", r.segments)
      .add_raw("path_val_bpb", json_array(r.path_bpb))
      .add_raw("path_scored_bytes", json_array(r.path_bytes))
      .add_raw("domain_val_bpb", dom.str())
      .add_raw("domain_scored_bytes", json_array(r.domain_bytes))
      .str();
}

void print_routed(const RoutedEval& r) {
  std::printf("routed validation: %.4f bits per byte over %.0f scored bytes (%ld routing decisions)\n", r.bpb, r.bytes,
              r.segments);
  for (size_t d = 0; d < r.domains.size(); ++d)
    std::printf("  %-14s %.4f bpb (%.0f bytes)\n", r.domains[d].c_str(), r.domain_bpb[d], r.domain_bytes[d]);
  std::fflush(stdout);
}

int run_stages(const Deck& deck, int rank, int size) {
  start_watchdog(deck.run.collective_timeout, rank);  // every blocking collective from here on is watched
  const auto [local_rank, local_ranks] = node_local_rank();
  set_threads(deck, local_ranks);
  if (deck.route.prefix_tokens >= deck.eval.doc_bytes)
    throw DeckError("route.prefix_tokens = " + std::to_string(deck.route.prefix_tokens) +
                    " leaves nothing to score: it must be smaller than eval.doc_bytes = " + std::to_string(deck.eval.doc_bytes));
  const std::string run_dir = (fs::path(deck.run.out_dir) / deck.run.name).string();
  if (rank == 0) fs::create_directories(run_dir);
  const RunLock lock(run_dir, rank, MPI_COMM_WORLD);  // one run at a time here; held until return or unwinding
  Topology topo = make_topology(deck.dipaco.modules_per_level, size);
  const MemoryEstimate memory = check_memory(deck, topo, rank);  // before anything large is allocated
  if (rank == 0) {
    write_file_atomic(run_dir + "/deck.ini",
                      "# resolved deck" + (deck.source.empty() ? "" : " from " + deck.source) + "\n" + deck.text());
  }
  watched("a barrier after rank 0 wrote a file", [] { MPI_Barrier(MPI_COMM_WORLD); });

  // prepare: the corpus, split into training and validation documents.
  Split split = split_corpus(read_corpus(deck.data.corpus), deck.data.val_fraction, deck.data.min_val_docs);
  // Without validation documents every bits-per-byte figure would be NaN.
  if (split.val.empty())
    throw CorpusError("corpus '" + deck.data.corpus + "' leaves no validation documents (data.val_fraction = " +
                      deck.values.at("data.val_fraction") + ", data.min_val_docs = " + deck.values.at("data.min_val_docs") +
                      "; each domain keeps one document for training): raise either, or add documents");
  if (rank == 0)
    for (const auto& domain : split.unvalidated)
      std::fprintf(stderr, "dipaco: warning: domain '%s' has no validation document; it is trained on but not validated\n",
                   domain.c_str());
  uint64_t h = 0;
  for (const auto& d : split.train) h = hash64(d.id + '\n' + d.text, h);
  for (const auto& d : split.val) h = hash64(d.id + '\n' + d.text, h);
  const std::string corpus_line = "corpus.content_hash = " + std::to_string(h) + "\n";
  {
    const std::string stamp = stage_stamp(deck, Stage::prepare, corpus_line), file = run_dir + "/prepare.txt";
    const bool same = read_text_everywhere(file) == stamp;
    if (rank == 0 && !same) write_file_atomic(file, stamp);
    if (rank == 0)
      std::printf("stage prepare: %s: %zu training and %zu validation documents (%s%s)\n", deck.data.corpus.c_str(),
                  split.train.size(), split.val.size(), same ? "up to date, " : "", file.c_str());
  }
  auto kernels = make_kernels(deck.run.device, local_rank);
  if (rank == 0) {
    std::printf("dipaco %s: %d rank(s), %d path(s), %d thread(s) per rank, device %s, precision %s, memory per rank: %s\n",
                DIPACO_VERSION, size, topo.paths, omp_get_max_threads(), kernels->name().c_str(),
                deck.train.precision.c_str(), memory.describe().c_str());
    std::fflush(stdout);
  }

  // warm start: the dense model every path starts from and whose features route.
  const std::string warm_file = warm_start_file(deck, run_dir);
  std::vector<float> warm;
  if (!warm_start(deck, split, *kernels, warm_file, stage_stamp(deck, Stage::warm_start, corpus_line), run_dir, rank, warm)) {
    if (rank == 0) std::printf("exit %d: stopped during the warm start with a checkpoint; run the same command again to resume\n", int(kExitRequeue));
    return kExitRequeue;
  }
  const ModelShape shape = model_shape(deck);
  const Precision precision = deck.train.precision == "bf16" ? Precision::bf16 : Precision::fp32;
  FeatureModel fm(*kernels, shape, precision, warm, deck.train.batch_size);

  // route: shards written once.
  const std::string route_stamp = stage_stamp(deck, Stage::route, corpus_line);
  ShardFile shards;
  if (load_shards(shard_file_name(run_dir, 0), route_stamp, split, shards)) {
    say(rank, "stage route: up to date (" + shard_file_name(run_dir, 0) + ")");
  } else {
    double t0 = MPI_Wtime();
    shards = route_documents(deck, split, fm, topo.paths);
    save_shards(shard_file_name(run_dir, 0), shards, route_stamp, split, rank);
    if (rank == 0)
      std::printf("stage route: %s%s in %s; training documents per path: %s -> %s\n", deck.route.method.c_str(),
                  deck.route.method == "kmeans" ? (" (" + deck.route.routing + ")").c_str() : "",
                  format_duration(MPI_Wtime() - t0).c_str(), shard_sizes(shards.train).c_str(),
                  shard_file_name(run_dir, 0).c_str());
  }

  // train, with em_rounds re-shardings at evenly spaced steps (multiples of H when H > 0).
  const std::string train_stamp = stage_stamp(deck, Stage::train, corpus_line);
  const std::string stamp_file = run_dir + "/train.stamp";
  const std::string before = read_text_everywhere(stamp_file);
  Deck d = deck;
  if (!before.empty() && before != train_stamp && deck.run.restart == "auto") {
    // The deck changed under existing checkpoints: keep them aside, train afresh.
    if (rank == 0) {
      const std::string aside = run_dir + "/checkpoints.stale";
      move_checkpoints_aside(run_dir + "/checkpoints");
      std::printf("stage train: the deck changed (%s); earlier checkpoints moved to %s, training starts over\n",
                  stamp_changes(before, train_stamp).c_str(), aside.c_str());
    }
    d.run.restart = "never";
  }
  if (rank == 0) write_file_atomic(stamp_file, train_stamp);
  watched("a barrier after rank 0 wrote a file", [] { MPI_Barrier(MPI_COMM_WORLD); });

  Trainer trainer(d, MPI_COMM_WORLD, *kernels, shards_of(split.train, shards.train), shards_of(split.val, shards.val), run_dir);
  trainer.set_initial_params(warm);
  Checkpointer ckpt(d, run_dir, MPI_COMM_WORLD);
  std::string resumed;
  resumed = ckpt.load(trainer, d.run.restart, d.run.restart_force);  // its collectives are watched one by one
  trainer.set_checkpointer(&ckpt);
  const long steps = deck.train.steps, H = deck.dipaco.inner_steps;
  std::vector<long> boundary;  // step at which re-sharding round e (1-based) happens
  for (int e = 1; e <= deck.route.em_rounds; ++e) {
    long b = steps * e / (deck.route.em_rounds + 1);
    if (H > 0) b = std::max(H, b / H * H);
    if (b > 0 && b < steps && (boundary.empty() || b > boundary.back())) boundary.push_back(b);
  }
  if (deck.route.em_rounds > 0 && deck.route.method != "kmeans")
    throw DeckError("route.em_rounds needs route.method = kmeans (re-routing refits the router)");
  long step = trainer.progress().step;
  if (rank == 0) {
    if (!resumed.empty() && step >= steps)
      std::printf("stage train: up to date (%s at step %ld)\n", resumed.c_str(), step);
    else if (!resumed.empty())
      std::printf("stage train: resumed from %s at step %ld of %ld (outer round %ld)\n", resumed.c_str(), step, steps,
                  trainer.progress().rounds);
    else std::printf("stage train: %ld steps per path on %d path(s)\n", steps, topo.paths);
    std::fflush(stdout);
  }
  TrainSummary sum;
  double sync_seconds = 0, sync_bytes = 0;
  long dropped = 0;
  for (size_t e = 0; e <= boundary.size(); ++e) {
    const long until = e < boundary.size() ? boundary[e] : steps;
    if (e > 0 && step >= boundary[e - 1]) {
      // Re-sharded here: the file of this round, or make it from the current weights.
      const std::string file = shard_file_name(run_dir, int(e)), stamp = train_stamp + "em_round = " + std::to_string(e) + "\n";
      if (!load_shards(file, stamp, split, shards)) {
        double t0 = MPI_Wtime();
        ShardFile next = reroute_by_loss(deck, split, trainer, fm, shards.router, int(e));
        long moved = 0;
        for (size_t p = 0; p < next.train.size(); ++p)
          for (int i : next.train[p]) moved += !std::count(shards.train[p].begin(), shards.train[p].end(), i);
        shards = std::move(next);
        save_shards(file, shards, stamp, split, rank);
        if (rank == 0)
          std::printf("re-routing round %zu at step %ld: %ld document placements changed by loss in %s; per path: %s -> %s\n",
                      e, boundary[e - 1], moved, format_duration(MPI_Wtime() - t0).c_str(), shard_sizes(shards.train).c_str(),
                      file.c_str());
      }
      trainer.set_shards(shards_of(split.train, shards.train), shards_of(split.val, shards.val));
    }
    if (step >= until && until < steps) continue;
    sum = trainer.run(until);
    sync_seconds += sum.sync_seconds, sync_bytes += sum.sync_bytes, dropped += sum.dropped;
    step = trainer.progress().step;
    if (sum.stopped) {
      if (rank == 0) std::printf("exit %d: checkpoint written; run the same command again to resume\n", int(kExitRequeue));
      return kExitRequeue;
    }
  }
  sum.sync_seconds = sync_seconds, sum.sync_bytes = sync_bytes, sum.dropped = dropped;

  // evaluate: each validation document by the path its prefix routes it to.
  const std::string eval_stamp = stage_stamp(deck, Stage::evaluate, corpus_line) + "checkpoint_step = " +
                                 std::to_string(step) + "\nshard_round = " + std::to_string(shards.round) + "\n";
  const std::string eval_file = run_dir + "/eval.json", eval_stamp_file = run_dir + "/eval.stamp";
  std::string routed_text;
  double routed_bpb = NAN;
  if (read_text_everywhere(eval_stamp_file) == eval_stamp && fs::exists(eval_file)) {
    routed_text = read_text(eval_file);
    auto at = routed_text.find("\"val_bpb\":");
    routed_bpb = at == std::string::npos ? NAN : std::atof(routed_text.c_str() + at + 10);
    while (!routed_text.empty() && routed_text.back() == '\n') routed_text.pop_back();
    if (rank == 0) std::printf("stage evaluate: up to date (%s): routed validation %.4f bits per byte\n", eval_file.c_str(), routed_bpb);
  } else {
    if (deck.eval.reroute_every > 0 && !shards.has_router)
      say(rank, "note: eval.reroute_every needs route.method = kmeans; each document is routed once");
    double t0 = MPI_Wtime();
    RoutedEval routed = routed_evaluate(trainer, split.val, path_of_val(shards, split.val.size()),
                                        shards.has_router ? &shards.router : nullptr, fm, deck);
    routed_text = routed_json(routed, deck), routed_bpb = routed.bpb;
    if (rank == 0) {
      write_file_atomic(eval_file, routed_text + "\n");
      write_file_atomic(eval_stamp_file, eval_stamp);
      std::printf("stage evaluate: done in %s -> %s\n", format_duration(MPI_Wtime() - t0).c_str(), eval_file.c_str());
      print_routed(routed);
    }
  }
  if (rank == 0) {
    JsonRecord r;
    r.add("name", deck.run.name)
        .add("ranks", topo.ranks)
        .add("paths", topo.paths)
        .add("steps", long(deck.train.steps))
        .add("warm_steps", long(deck.route.warm_steps))
        .add("tokens", sum.tokens)
        .add("val_bpb", sum.final_eval.bpb)
        .add_raw("path_val_bpb", json_array(sum.final_eval.path_bpb))
        .add("routed_val_bpb", routed_bpb)
        .add_raw("routed", routed_text)
        .add("wall_seconds", sum.wall_seconds)
        .add("tokens_per_second", sum.tokens / std::max(sum.wall_seconds, 1e-9))
        .add("outer_rounds", sum.rounds)
        .add("dropped_contributions", sum.dropped)
        .add("sync_seconds", sum.sync_seconds)
        .add("sync_share", sum.sync_seconds / std::max(sum.wall_seconds, 1e-9))
        .add("sync_bytes_per_rank", sum.sync_bytes)
        .add("path_allreduce_bytes_per_rank", sum.path_bytes)
        .add("data_parallel_bytes_per_rank", sum.dp_bytes)
        .add("communication_saving",
             sum.sync_bytes + sum.path_bytes > 0 ? sum.dp_bytes / (sum.sync_bytes + sum.path_bytes) : 0.0);
    // The summary lists every file of the run, itself included.
    r.add_raw("files", json_strings(files_written(run_dir, warm_file)));
    write_file_atomic(run_dir + "/summary.json", r.str() + "\n");

    std::printf("\ndone: %ld steps, %.0f tokens in %s (%.1fk tok/s)\n", long(deck.train.steps), double(sum.tokens),
                format_duration(sum.wall_seconds).c_str(), sum.tokens / std::max(sum.wall_seconds, 1e-9) / 1000);
    std::printf("validation bits per byte: %.4f (windows of each path's shard); routed: %.4f\n", sum.final_eval.bpb, routed_bpb);
    if (sum.rounds > 0)
      std::printf("outer rounds: %ld; sync %.3f s = %.2f%% of wall time; %.2f MB all-reduced per rank "
                  "(data-parallel would be %.1f MB: %.0fx less)\n",
                  sum.rounds, sum.sync_seconds, 100 * sum.sync_seconds / std::max(sum.wall_seconds, 1e-9),
                  (sum.sync_bytes + sum.path_bytes) / 1e6, sum.dp_bytes / 1e6,
                  sum.dp_bytes / std::max(sum.sync_bytes + sum.path_bytes, 1.0));
    std::printf("results: %s/{metrics.jsonl,summary.json,eval.json,deck.ini}\n", run_dir.c_str());
  }
  return kExitOk;
}

}  // namespace

int run_pipeline(const Deck& deck, int rank, int size) {
  try {
    return run_stages(deck, rank, size);
  } catch (const WriteError& e) {  // on the writing rank: say what survives on disk
    const std::string dir = (fs::path(deck.run.out_dir) / deck.run.name / "checkpoints").string();
    throw WriteError(std::string(e.what()) + "; the run stops; " + checkpoint_status(dir));
  }
}

}  // namespace dipaco
