#include "dipaco/cmd/pipeline.hpp"

#include <hdf5.h>
#include <malloc.h>
#include <mpi.h>
#include <omp.h>

#include <cmath>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "dipaco/cmd/app.hpp"
#include "dipaco/cmd/run_context.hpp"
#include "dipaco/data/prepare.hpp"
#include "dipaco/data/tokenizer.hpp"
#include "dipaco/dist/fault.hpp"
#include "dipaco/dist/memory_estimate.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/files.hpp"
#include "dipaco/io/h5io.hpp"
#include "dipaco/io/key_lines.hpp"
#include "dipaco/io/log.hpp"
#include "dipaco/io/run_lock.hpp"
#include "dipaco/io/stamp.hpp"
#include "dipaco/train/divergence.hpp"
#include "dipaco/train/metrics.hpp"

namespace fs = std::filesystem;

namespace dipaco {

std::string stage_stamp(const Deck& deck, Stage s, const std::string& extra) {
  std::string out;
  for (const auto& [key, value] : deck.values)  // sorted by key
    if (const DeckStage k = deck_key(key).stage; k != DeckStage::none && k <= s) out += key + " = " + value + "\n";
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

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return in ? s.str() : std::string();
}

namespace {
int world_rank() {
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

// Rank 0's text on every rank.
std::string broadcast_text(std::string s) {
  long n = long(s.size());
  CollectiveScope wait("a broadcast of a file rank 0 read");
  MPI_Bcast(&n, 1, MPI_LONG, 0, MPI_COMM_WORLD);
  s.resize(n);
  MPI_Bcast(s.data(), int(n), MPI_CHAR, 0, MPI_COMM_WORLD);
  return s;
}
}  // namespace

std::string read_text_everywhere(const std::string& path) {
  return broadcast_text(world_rank() == 0 && fs::exists(path) ? read_text(path) : std::string());
}

std::string read_stamp_everywhere(const std::string& h5_file) {
  std::string stamp;
  if (world_rank() == 0 && fs::exists(h5_file)) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // an unreadable file is one to make again, not an error
    H5Id f(H5Fopen(h5_file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    try {
      if (f.ok()) stamp = read_attr_string(f, "stamp");
    } catch (const CheckpointError&) {
    }
  }
  return broadcast_text(stamp);
}

namespace {

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

// ---- prepare: the token store, and the split read from it -------------------

PrepareOptions prepare_options(const Deck& deck) {
  PrepareOptions o;
  o.corpus = deck.data.corpus, o.val = deck.data.val, o.domain_key = deck.data.domain_key;
  o.val_fraction = deck.data.val_fraction, o.min_val_docs = deck.data.min_val_docs;
  o.piece_bytes = uint64_t(deck.data.piece_mb * 1e6), o.eot_token = deck.data.eot_token;
  o.sentencepiece = deck.data.tokenizer == TokenizerKind::sentencepiece, o.decode_table = deck.data.decode_table;
  if (!o.sentencepiece && !deck.data.tokenizer_model.empty())
    throw DeckError("data.tokenizer_model = " + deck.data.tokenizer_model + " needs data.tokenizer = sentencepiece");
  o.tokenizer_model = deck.data.tokenizer_model, o.tokenizer_type = name(deck.data.tokenizer_type);
  o.tokenizer_vocab = deck.data.tokenizer_vocab, o.tokenizer_sample_bytes = uint64_t(deck.data.tokenizer_sample_mb * 1e6);
  return o;
}

// The store's documents as the split (CorpusError: a damaged store).
void map_store(RunContext& c) {
  c.store = std::make_unique<TokenStore>(c.store_dir);
  c.split = c.store->split();
}

// What the split must hold to train and score (CorpusError: the corpus, not the
// store, is at fault); its content hash goes into every later stamp.
void use_split(RunContext& c, const std::string& how) {
  const Deck& deck = c.deck;
  // Without validation documents every bits-per-byte figure would be NaN.
  if (c.split.val.empty())
    throw CorpusError("corpus '" + deck.data.corpus + "' leaves no validation documents (data.val_fraction = " +
                      deck.values.at("data.val_fraction") + ", data.min_val_docs = " + deck.values.at("data.min_val_docs") +
                      "; each domain keeps one document for training): raise either, or add documents");
  if (c.split.train.empty()) throw CorpusError("corpus '" + deck.data.corpus + "' leaves no training documents");
  // The routed evaluation scores what follows each document's routing prefix.
  const size_t prefix = size_t(deck.route.prefix_tokens);
  if (std::none_of(c.split.val.begin(), c.split.val.end(), [&](const Document& d) { return d.tokens() + 1 > prefix; }))
    throw CorpusError("no validation document of '" + deck.data.corpus + "' is longer than route.prefix_tokens = " +
                      std::to_string(prefix) + " tokens, which route and are not scored: the routed evaluation would score "
                      "nothing; lower route.prefix_tokens or add longer documents");
  if (c.rank == 0)
    for (const auto& domain : c.split.unvalidated)
      std::fprintf(stderr, "dipaco: warning: domain '%s' has no validation document; it is trained on but not validated\n",
                   domain.c_str());
  // The model's vocabulary: the data's unless the deck names a larger one.
  const int need = c.store->vocab_size();
  if (c.deck.model.vocab_size == 0) {
    c.deck.model.vocab_size = need, c.deck.values["model.vocab_size"] = std::to_string(need);
  } else if (c.deck.model.vocab_size < need) {
    const std::string what = c.store->tokenizer_file().empty()
                                 ? "token id " + c.store->meta("max_token") + " (" + c.store->meta("max_token_at") + ")"
                                 : "the tokenizer's ids (" + c.store->tokenizer_file() + ")";
    throw CorpusError(what + " is at or above model.vocab_size = " + std::to_string(c.deck.model.vocab_size) +
                      ": the data needs " + std::to_string(need) + " (0: the data's own)");
  }
  c.token_bytes = store_token_bytes(*c.store);
  c.loss_unit = c.store->bytes() || !c.token_bytes.empty() ? "bits per byte" : "bits per token";
  c.corpus_line = "corpus.content_hash = " + c.store->meta("content_hash") + "\n";
  say("stage prepare: %s: %zu training and %zu validation documents, %.1f MB %s\n", deck.data.corpus.c_str(),
      c.split.train.size(), c.split.val.size(), std::atof(c.store->meta("bytes").c_str()) / 1e6, how.c_str());
}

}  // namespace

bool up_to_date_prepare(const RunContext& c, const std::string& stamp) {
  return same_stamp(read_text_everywhere(c.store_dir + "/stamp.txt"), stamp);
}

bool load_prepare(RunContext& c, const std::string&, std::string&) {
  int ok = 1;
  try {
    map_store(c);
  } catch (const CorpusError&) {
    ok = 0;  // a damaged store is made again
  }
  watched("agreeing on the token store", [&] { MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD); });
  if (ok) use_split(c, "(up to date, " + c.store_dir + ")");  // a refusal here needs no second prepare
  return ok;
}

int make_prepare(RunContext& c, const std::string& stamp) {
  PrepareOptions o = prepare_options(c.deck);
  o.after_piece = [&c] { fault_point(c.deck, "prepare"); };
  const PrepareReport r = prepare_store(o, c.store_dir, stamp, MPI_COMM_WORLD);
  c.seconds.emplace_back("prepare", r.seconds);
  char how[160];
  std::snprintf(how, sizeof how, "-> %s in %.1f s (%.0f MB/s of input files per rank)", c.store_dir.c_str(), r.seconds,
                r.input_bytes / std::max(r.seconds, 1e-9) / 1e6 / c.size);
  map_store(c);
  use_split(c, how);
  if (r.empty > 0) say("stage prepare: " + std::to_string(r.empty) + " line(s) with an empty text skipped");
  if (r.tokens > 0) {
    char rate[200];
    std::snprintf(rate, sizeof rate, "; tokenizer trained in %.1f s, text encoded in %.1f s (%.2f MB/s per rank)",
                  r.train_tokenizer_seconds, r.encode_seconds, double(r.bytes) / std::max(r.encode_seconds, 1e-9) / 1e6 / c.size);
    say("stage prepare: " + std::to_string(r.tokens) + " SentencePiece tokens (" + c.store->meta("vocab_size") +
        " ids, " + c.store_dir + "/tokenizer.model)" + rate);
  }
  return kExitOk;
}

FeatureModel& RunContext::features() {
  if (!features_) {
    features_ = std::make_unique<FeatureModel>(*kernels, model_shape(deck), deck.train.precision, warm, deck.train.batch_size,
                                               deck.route.prefix_tokens);
  }
  return *features_;
}

FeatureModel& RunContext::features(int window) {
  if (window == deck.route.prefix_tokens) return features();
  std::unique_ptr<FeatureModel>& f = window_features_[window];
  if (!f) f = std::make_unique<FeatureModel>(*kernels, model_shape(deck), deck.train.precision, warm, deck.train.batch_size, window);
  return *f;
}

namespace {

// ---- the stage table -------------------------------------------------------

// A stage: its stamp (the deck keys of `keys` and of the stages before it, the
// corpus hash, and `extra`), what its "up to date" line names (null: the
// stage says it itself), and its three steps (run_context.hpp).
struct StageDef {
  const char* name;
  Stage keys;
  std::string (*names)(const RunContext&);
  std::string (*extra)(const RunContext&);
  bool (*up_to_date)(const RunContext&, const std::string& stamp);
  bool (*load)(RunContext&, const std::string& stamp, std::string& note);
  int (*make)(RunContext&, const std::string& stamp);
};

const StageDef kStages[] = {
    {"prepare", Stage::prepare, nullptr, nullptr, up_to_date_prepare, load_prepare, make_prepare},
    {"warm start", Stage::warm_start, [](const RunContext& c) { return c.warm_file; }, nullptr, up_to_date_warm_start,
     load_warm_start, make_warm_start},
    {"route", Stage::route, [](const RunContext& c) { return shard_file_name(c.run_dir, 0); }, nullptr, up_to_date_route,
     load_route, make_route},
    {"train", Stage::train,
     [](const RunContext& c) { return c.resumed + " at step " + std::to_string(c.trainer->progress().step); },
     train_stamp_lines, up_to_date_train, load_train, make_train},
    {"evaluate", Stage::evaluate, [](const RunContext& c) { return c.run_dir + "/eval.json"; }, evaluate_stamp_lines,
     up_to_date_evaluate, load_evaluate, make_evaluate},
};

// Reads back the stages whose output is up to date, makes the others; returns an exit code.
int run_stage_table(RunContext& c) {
  for (const StageDef& s : kStages) {
    const std::string stamp = stage_stamp(c.deck, s.keys, c.corpus_line) + (s.extra ? s.extra(c) : "");
    std::string note;
    if (s.up_to_date(c, stamp) && s.load(c, stamp, note)) {
      if (s.names) say(std::string("stage ") + s.name + ": up to date (" + s.names(c) + ")" + note);
      continue;
    }
    if (const int code = s.make(c, stamp); code != kExitOk) return code;
    malloc_trim(0);  // a stage's freed buffers back to the system, not kept for the next stage's peak
  }
  return kExitOk;
}

// ---- setup and summary -----------------------------------------------------

// run.threads = 0: OMP_NUM_THREADS when set, else the node's cores shared by its ranks
// (every rank taking all cores would oversubscribe them).
void set_threads(const Deck& deck, int local_ranks) {
  if (deck.run.threads > 0) omp_set_num_threads(deck.run.threads);
  else if (!std::getenv("OMP_NUM_THREADS")) omp_set_num_threads(std::max(1, omp_get_num_procs() / local_ranks));
}

// The run directory, its lock, the resolved deck, the corpus split and the kernels.
void set_up(RunContext& c, std::unique_ptr<RunLock>& lock) {
  const Deck& deck = c.deck;
  const auto [local_rank, local_ranks] = node_local_rank();
  set_threads(deck, local_ranks);
  if (deck.route.prefix_tokens >= deck.eval.doc_bytes)
    throw DeckError("route.prefix_tokens = " + std::to_string(deck.route.prefix_tokens) +
                    " leaves nothing to score: it must be smaller than eval.doc_bytes = " + std::to_string(deck.eval.doc_bytes));
  c.run_dir = (fs::path(deck.run.out_dir) / deck.run.name).string();
  // A rank count or a deck refused here leaves no run directory behind.
  c.topo = make_topology(deck.dipaco.modules_per_level, c.size, deck.dipaco.private_levels);
  const MemoryEstimate memory = check_memory(deck, c.topo, c.rank);  // before anything large is allocated
  if (c.rank == 0) fs::create_directories(c.run_dir);
  lock = std::make_unique<RunLock>(c.run_dir, c.rank, MPI_COMM_WORLD);  // one run at a time here
  if (c.rank == 0)
    write_file_atomic(c.run_dir + "/deck.ini",
                      "# resolved deck" + (deck.source.empty() ? "" : " from " + deck.source) + "\n" + deck.text());
  watched("a barrier after rank 0 wrote a file", [] { MPI_Barrier(MPI_COMM_WORLD); });
  c.store_dir = store_dir_of(deck.data.store, c.run_dir);
  c.corpus_line = input_identity(prepare_options(deck));  // the prepare stamp; then the store's content hash
  c.kernels = make_kernels(deck.run.device, local_rank);
  c.warm_file = deck.route.warm_start.empty() ? c.run_dir + "/warmstart.h5" : deck.route.warm_start;
  say("dipaco %s: %d rank(s), %d path(s), %d thread(s) per rank, device %s, precision %s, memory per rank: %s\n",
      DIPACO_VERSION, c.size, c.topo.paths, omp_get_max_threads(), c.kernels->name().c_str(),
      name(deck.train.precision).c_str(), memory.describe().c_str());
}

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

void write_summary(const RunContext& c) {
  const Deck& deck = c.deck;
  const TrainSummary& sum = c.summary;
  const std::string& run_dir = c.run_dir;
  if (c.rank != 0) return;
  {
    JsonRecord r;
    r.add("name", deck.run.name)
        .add("ranks", c.topo.ranks)
        .add("paths", c.topo.paths)
        .add("steps", long(deck.train.steps))
        .add("warm_steps", long(deck.route.warm_steps))
        .add("tokens", sum.tokens)
        .add("val_bpb", sum.final_eval.bpb)
        .add_raw("path_val_bpb", json_array(sum.final_eval.path_bpb))
        .add("routed_val_bpb", c.routed_bpb)
        .add("loss_unit", c.loss_unit)
        .add_raw("routed", c.routed_text)
        .add("wall_seconds", sum.wall_seconds)
        .add("tokens_per_second", sum.tokens / std::max(sum.wall_seconds, 1e-9))
        .add("outer_rounds", sum.rounds)
        .add("dropped_contributions", sum.dropped)
        .add("diverged_contributions", sum.diverged)
        .add("rolled_back", sum.rolled_back)
        .add("sync_seconds", sum.sync_seconds)
        .add("sync_share", sum.sync_seconds / std::max(sum.wall_seconds, 1e-9))
        .add("sync_bytes_per_rank", sum.sync_bytes)
        .add("path_allreduce_bytes_per_rank", sum.path_bytes)
        .add("data_parallel_bytes_per_rank", sum.dp_bytes)
        .add("peak_rss_mb_per_rank", c.peak_rss_bytes / 1e6)
        .add("checkpoints_written", sum.checkpoints)
        .add("checkpoint_write_seconds", sum.checkpoint_seconds)
        .add("communication_saving",
             sum.sync_bytes + sum.path_bytes > 0 ? sum.dp_bytes / (sum.sync_bytes + sum.path_bytes) : 0.0);
    JsonRecord seconds;
    for (const auto& [what, s] : c.seconds) seconds.add(what, s);
    r.add_raw("seconds", seconds.str());
    // The summary lists every file of the run, itself included.
    r.add_raw("files", json_strings(files_written(run_dir, c.warm_file)));
    write_file_atomic(run_dir + "/summary.json", r.str() + "\n");

    say("\ndone: %ld steps, %.0f tokens in %s (%.1fk tok/s); peak memory %.0f MB per rank\n", long(deck.train.steps),
        double(sum.tokens), format_duration(sum.wall_seconds).c_str(), sum.tokens / std::max(sum.wall_seconds, 1e-9) / 1000,
        c.peak_rss_bytes / 1e6);
    say("validation %s: %.4f (windows of each path's shard); routed: %.4f\n", c.loss_unit.c_str(), sum.final_eval.bpb,
        c.routed_bpb);
    if (sum.rounds > 0) {
      const double sent = sum.sync_bytes + sum.path_bytes;
      char saving[96] = "no rank sent anything: one rank holds every path";
      if (sent > 0)
        std::snprintf(saving, sizeof saving, "data-parallel would be %.1f MB: %.0fx less", sum.dp_bytes / 1e6, sum.dp_bytes / sent);
      say("outer rounds: %ld; sync %.3f s = %.2f%% of wall time; %.2f MB sent per rank (%s)\n", sum.rounds,
          sum.sync_seconds, 100 * sum.sync_seconds / std::max(sum.wall_seconds, 1e-9), sent / 1e6, saving);
    }
    say("results: %s/{metrics.jsonl,summary.json,eval.json,deck.ini}\n", run_dir.c_str());
  }
}

int run_stages(const Deck& deck, int rank, int size) {
  start_watchdog(deck.run.collective_timeout, rank);  // every blocking collective from here on is watched
  RunContext c(deck, rank, size);
  std::unique_ptr<RunLock> lock;  // held until return or unwinding
  set_up(c, lock);
  if (const int code = run_stage_table(c); code != kExitOk) return code;
  c.peak_rss_bytes = peak_resident_bytes();
  watched("agreeing on the peak memory", [&] {
    MPI_Allreduce(MPI_IN_PLACE, &c.peak_rss_bytes, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  });
  write_summary(c);
  // Recorded as null in summary.json and eval.json; never a finished run.
  if (!std::isfinite(c.routed_bpb) || !std::isfinite(c.summary.final_eval.bpb)) {
    if (c.rank == 0)
      std::fprintf(stderr, "dipaco: error: the evaluation met losses that are not finite (validation %s, routed %s): "
                   "the trained weights are not usable; exit %d\n", show_value(c.summary.final_eval.bpb).c_str(),
                   show_value(c.routed_bpb).c_str(), int(kExitDiverged));
    return kExitDiverged;
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
