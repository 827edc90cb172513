// Stage route: documents to paths, by a rule or by k-means on the warm-start
// model's prefix features. Output: shards.h5 (the shards and the router).
// Also the train stage's re-sharding by loss (shards-r<N>.h5).
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>

#include "dipaco/cmd/run_context.hpp"
#include "dipaco/dist/first_error.hpp"
#include "dipaco/io/files.hpp"
#include "dipaco/cmd/app.hpp"
#include "dipaco/data/routed_eval.hpp"
#include "dipaco/data/router.hpp"
#include "dipaco/dist/fault.hpp"
#include "dipaco/dist/gather_rows.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/stamp.hpp"
#include "dipaco/train/metrics.hpp"

namespace fs = std::filesystem;

namespace dipaco {

namespace {

std::vector<float> doc_features(FeatureModel& fm, const DocList& list) {
  const std::vector<Document> docs = list.documents(0, list.size());  // the windows point at them
  std::vector<FeatureWindow> w;
  for (const auto& d : docs) w.push_back({&d, 0});
  return fm.features(w, MPI_COMM_WORLD);
}

std::vector<int> nearest_paths(const Router& r, const std::vector<float>& f) {
  std::vector<int> out(f.size() / r.dim);
  for (size_t i = 0; i < out.size(); ++i) out[i] = r.nearest_path(&f[i * r.dim]);
  return out;
}

// Rank r's block of n items: [n r / size, n (r + 1) / size).
std::pair<size_t, size_t> block_of(size_t n, int rank, int size) { return {n * rank / size, n * (rank + 1) / size}; }

// The features of documents (no communication), a chunk at a time, handed to
// `use(first, features)`: a rank holds one chunk's features, never its block's.
// The chunk's text is read, not mapped (corpus.hpp).
template <class Use>
void chunked_features(FeatureModel& fm, const DocList& docs, Use use) {
  docs.each_block(4096, [&](size_t a, const std::vector<Document>& chunk) {  // the windows point at chunk
    std::vector<FeatureWindow> w;
    for (const Document& d : chunk) w.push_back({&d, 0});
    use(a, fm.local_features(w));
  });
}

// k-means is fit on about route.fit_docs training documents, chosen by a hash
// of their id (all of them in a smaller corpus), the same at any rank count.
bool in_fit_sample(const Document& d, double fraction) {
  return fraction >= 1 || double(hash64(read_view(d.id), 41) >> 11) / double(1ULL << 53) < fraction;
}

// Every rank pools the features of the sample's documents in its block; they
// are gathered to every rank, which fits the same router (redundant, so that no
// rank waits minutes for another in a watched collective). Each rank then
// scores its block a chunk at a time; when no balance bound binds (no shard over
// route.max_shard_fraction or under route.min_shard_fraction, none empty,
// route.overlap = 1) each document goes to its nearest path and each rank keeps
// its block's lists; else the features are computed again and rank 0 gathers
// the scores ([documents, paths] doubles) to assign them within the bounds. The
// others keep the router and read the file rank 0 writes. A rank's memory: the
// sample, a chunk, an int per document.
ShardFile route_documents(const Deck& deck, const Split& split, FeatureModel& fm, int P, int rank, int size) {
  ShardFile s;
  if (deck.route.method != RouteMethod::kmeans) {
    s.train = assign_by_rule(split.train, P, deck.route.method);
    s.val = assign_by_rule(split.val, P, deck.route.method);
    return s;
  }
  const int C = fm.dim();
  const size_t n = split.train.size();
  if (n < size_t(P))
    throw DeckError(std::to_string(n) + " training documents cannot be routed to " + std::to_string(P) + " paths");
  const auto [lo, hi] = block_of(n, rank, size);
  const auto [vlo, vhi] = block_of(split.val.size(), rank, size);
  const DocList mine = split.train.slice(lo, hi), vmine = split.val.slice(vlo, vhi);
  const double fraction = double(deck.route.fit_docs) / double(n);
  std::vector<int> picks;
  mine.each_block(4096, [&](size_t a, const std::vector<Document>& chunk) {
    for (size_t i = 0; i < chunk.size(); ++i)
      if (in_fit_sample(chunk[i], fraction)) picks.push_back(int(a + i));
  });
  const DocList in_sample = mine.subset(picks);
  std::vector<float> sample;
  sample.reserve(picks.size() * size_t(C));  // grown by doubling it would peak at up to twice this
  chunked_features(fm, in_sample, [&](size_t, const std::vector<float>& f) { sample.insert(sample.end(), f.begin(), f.end()); });
  fault_point(deck, "route");
  if (size > 1) sample = gather_rows(sample, size_t(C), true, MPI_COMM_WORLD, "the router's sample gather");  // else: no copy
  if (sample.size() < size_t(P) * C) throw DeckError("route.fit_docs = " + std::to_string(deck.route.fit_docs) + " leaves " +
                                                     std::to_string(sample.size() / C) + " documents to fit " + std::to_string(P) + " paths");
  s.has_router = true;
  s.router = fit_router(sample, C, deck.dipaco.modules_per_level, deck.route.routing, deck.run.seed, deck.route.kmeans_iters);
  sample = {};
  std::vector<int> nearest(mine.size()), vnear(vmine.size());
  std::vector<long> count(P, 0);
  chunked_features(fm, mine, [&](size_t first, const std::vector<float>& f) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < f.size() / C; ++i) nearest[first + i] = s.router.nearest_path(&f[i * C]);
  });
  chunked_features(fm, vmine, [&](size_t first, const std::vector<float>& f) {
    for (size_t i = 0; i < f.size() / C; ++i) vnear[first + i] = s.router.nearest_path(&f[i * C]);
  });
  for (int p : nearest) ++count[p];
  watched("counting the nearest paths", [&] { MPI_Allreduce(MPI_IN_PLACE, count.data(), P, MPI_LONG, MPI_SUM, MPI_COMM_WORLD); });
  const long cap = long(shard_cap(deck.route.max_shard_fraction, n));
  const long floor = long(shard_floor(deck.route.min_shard_fraction, n));
  bool free = deck.route.overlap == 1;
  for (long c : count) free &= c > 0 && c <= cap && c >= floor;
  const std::vector<int> vpath = gather_rows(vnear, 1, false, MPI_COMM_WORLD, "the validation paths' gather");
  if (free) {  // each rank keeps its block's lists; save_shards writes them a rank at a time
    s.train.assign(size_t(P), {});
    for (size_t i = 0; i < nearest.size(); ++i) s.train[size_t(nearest[i])].push_back(int(lo + i));
    s.train_docs.assign(count.begin(), count.end());
    std::vector<unsigned long> width(size_t(P), 1);
    mine.each_block(4096, [&](size_t first, const std::vector<Document>& chunk) {
      for (size_t j = 0; j < chunk.size(); ++j) width[size_t(nearest[first + j])] = std::max<unsigned long>(width[size_t(nearest[first + j])], chunk[j].id.size());
    });
    watched("the ids' widths", [&] { MPI_Allreduce(MPI_IN_PLACE, width.data(), P, MPI_UNSIGNED_LONG, MPI_MAX, MPI_COMM_WORLD); });
    s.block_id_width.assign(width.begin(), width.end());
  } else {
    std::vector<double> scores(mine.size() * P);
    chunked_features(fm, mine, [&](size_t first, const std::vector<float>& f) {
#pragma omp parallel for schedule(static)
      for (size_t i = 0; i < f.size() / C; ++i) s.router.path_scores(&f[i * C], &scores[(first + i) * P]);
    });
    const std::vector<double> all = gather_rows(scores, size_t(P), false, MPI_COMM_WORLD, "the routing scores' gather");
    if (rank == 0)
      s.train = by_path(assign_paths(all, n, P, deck.route.max_shard_fraction, deck.route.overlap, deck.route.min_shard_fraction), P);
  }
  if (rank == 0) s.val = by_path(vpath, P);
  return s;
}

}  // namespace

std::string shard_file_name(const std::string& run_dir, int round) {
  return run_dir + (round == 0 ? "/shards.h5" : "/shards-r" + std::to_string(round) + ".h5");
}

bool load_shards(const std::string& file, const std::string& stamp, const Split& split, const std::vector<int>& held,
                 ShardFile& out) {
  int ok = 1;
  try {
    if (!fs::exists(file)) {
      ok = 0;
    } else {
      out = read_shard_file(file, split, &held);
      ok = same_stamp(out.stamp, stamp);
    }
  } catch (const CheckpointError&) {
    ok = 0;
  }
  watched("agreeing on the shard file", [&] { MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD); });
  return ok;
}

namespace {

constexpr int kBlockListsTag = 3107;

// A rank's block lists as one message: every path's count, then the indices.
std::vector<int> pack_lists(const Assignment& a) {
  std::vector<int> out;
  for (const auto& l : a) out.push_back(int(l.size()));
  for (const auto& l : a) out.insert(out.end(), l.begin(), l.end());
  return out;
}

Assignment unpack_lists(const std::vector<int>& m, size_t paths) {
  Assignment a(paths);
  size_t at = paths;
  for (size_t p = 0; p < paths; ++p) a[p].assign(m.begin() + long(at), m.begin() + long(at + size_t(m[p]))), at += size_t(m[p]);
  return a;
}

// Rank 0 writes the file from its own block's lists, then every other rank's in
// rank order (each sends its own when asked, so rank 0 holds one block at a
// time); a failed write still takes every message, so that no rank waits on it.
void save_block_lists(const std::string& file, const ShardFile& s, const Split& split, int rank, std::string& error) {
  int size;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (rank != 0) {
    const std::vector<int> m = pack_lists(s.train);
    watched("sending the shard lists to rank 0", [&] {
      MPI_Send(m.data(), int(m.size()), MPI_INT, 0, kBlockListsTag, MPI_COMM_WORLD);
    });
    return;
  }
  int from = 0;  // the rank whose lists were handed out last
  Assignment buf;
  auto receive = [&](int r) {
    MPI_Status st;
    int n = 0;
    std::vector<int> m;
    watched("receiving a rank's shard lists", [&] {
      MPI_Probe(r, kBlockListsTag, MPI_COMM_WORLD, &st);
      MPI_Get_count(&st, MPI_INT, &n);
      m.resize(size_t(n));
      MPI_Recv(m.data(), n, MPI_INT, r, kBlockListsTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    });
    return m;
  };
  ShardPieces pieces;
  pieces.docs = s.train_docs;
  pieces.id_width = s.block_id_width;
  pieces.next = [&]() -> const Assignment* {
    if (from == 0) return from = 1, &s.train;
    if (from >= size) return nullptr;
    buf = unpack_lists(receive(from++), s.train.size());
    return &buf;
  };
  try {
    write_shard_file(file, s, split, &pieces);
  } catch (const std::exception& e) {
    error = e.what();
  }
  for (from = std::max(from, 1); from < size; ++from) receive(from);  // the rest, unread
}

}  // namespace

void save_shards(const std::string& file, ShardFile& s, const std::string& stamp, const Split& split, int rank) {
  s.stamp = stamp;
  std::string error;
  if (!s.block_id_width.empty()) save_block_lists(file, s, split, rank, error);
  else if (rank == 0) try {
      write_shard_file(file, s, split);
    } catch (const std::exception& e) {
      error = e.what();
    }
  if (auto e = first_error(error, MPI_COMM_WORLD); !e.empty())
    throw WriteError("writing the shard file " + file + " failed: " + e + " (disk full or a file-size limit?); " +
                     "the next run routes again");
}

std::string shard_sizes(const std::vector<long>& docs) {
  std::string out;
  for (size_t p = 0; p < docs.size(); ++p) out += (p ? " " : "") + std::to_string(docs[p]);
  return out;
}

bool up_to_date_route(const RunContext& c, const std::string& stamp) {
  return same_stamp(read_stamp_everywhere(shard_file_name(c.run_dir, 0)), stamp);
}

bool load_route(RunContext& c, const std::string& stamp, std::string&) {
  return load_shards(shard_file_name(c.run_dir, 0), stamp, c.split, c.topo.paths_of_rank(c.rank), c.shards);
}

int make_route(RunContext& c, const std::string& stamp) {
  const Deck& deck = c.deck;
  const double t0 = MPI_Wtime();
  const std::string file = shard_file_name(c.run_dir, 0);
  c.shards = route_documents(deck, c.split, c.features(), c.topo.paths, c.rank, c.size);
  save_shards(file, c.shards, stamp, c.split, c.rank);
  // A rank keeps the lists of its own paths: from the whole lists when it made
  // them (rank 0 with caps, every rank routing by a rule), else from the file.
  const std::vector<int> held = c.topo.paths_of_rank(c.rank);
  if (c.shards.block_id_width.empty() && (c.rank == 0 || deck.route.method != RouteMethod::kmeans)) keep_held(c.shards, c.split.train, held);
  else c.shards = read_shard_file(file, c.split, &held);
  const double seconds = MPI_Wtime() - t0;
  c.seconds.emplace_back("route", seconds);
  char took[32];  // short routings (the scale test's) in hundredths of a second
  std::snprintf(took, sizeof took, "%.2fs", seconds);
  say("stage route: %s%s in %s; training documents per path: %s -> %s\n", name(deck.route.method).c_str(),
      deck.route.method == RouteMethod::kmeans ? (" (" + name(deck.route.routing) + ")").c_str() : "",
      seconds < 60 ? took : format_duration(seconds).c_str(), shard_sizes(c.shards.train_docs).c_str(), file.c_str());
  return kExitOk;
}

// Discriminative re-routing: each training document moves to the path with
// the lowest loss on it; the router is refit to that assignment (nearest centroid).
// Only the route.em_candidates paths nearest by the current router are tried.
ShardFile reroute_by_loss(const Deck& deck, const Split& split, Trainer& t, FeatureModel& fm, const Router& now,
                          int round) {
  const int P = t.topology().paths, C = fm.dim();
  const int c = deck.route.em_candidates > 0 ? std::min(deck.route.em_candidates, P) : P;
  std::vector<float> ft = doc_features(fm, split.train);
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
  auto paths_of_doc = assign_paths(loss, split.train.size(), P, deck.route.max_shard_fraction, deck.route.overlap,
                                  deck.route.min_shard_fraction);
  std::vector<int> primary;
  for (auto& p : paths_of_doc) primary.push_back(p[0]);
  ShardFile s;
  s.round = round;
  s.has_router = true;
  s.router = deck.route.refit == Refit::logistic ? refit_router_logistic(ft, C, primary, P) : refit_router(ft, C, primary, P);
  s.train = by_path(paths_of_doc, P);
  s.val = by_path(nearest_paths(s.router, doc_features(fm, split.val)), P);
  return s;
}

}  // namespace dipaco
