// Stage route: documents to paths, by a rule or by k-means on the warm-start
// model's prefix features. Output: shards.h5 (the shards and the router).
// Also the train stage's re-sharding by loss (shards-r<N>.h5).
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <numeric>

#include "dipaco/cmd/run_context.hpp"
#include "dipaco/cmd/app.hpp"
#include "dipaco/data/routed_eval.hpp"
#include "dipaco/data/router.hpp"
#include "dipaco/dist/fault.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/train/metrics.hpp"

namespace fs = std::filesystem;

namespace dipaco {

namespace {

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

// Every rank pools its block of the features and fits the router (the same on
// every rank; redundant, so that no rank waits minutes for another in a
// watched collective). Rank 0 alone scores every document against every path
// ([documents, paths] doubles: 2 GB at a million documents and 256 paths) and
// assigns them; the others keep the router and read the file rank 0 writes.
ShardFile route_documents(const Deck& deck, const Split& split, FeatureModel& fm, int P, int rank) {
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
  if (rank != 0) return s;
  std::vector<double> scores(split.train.size() * P);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < split.train.size(); ++i) s.router.path_scores(&ft[i * C], &scores[i * P]);
  s.train = by_path(assign_paths(scores, split.train.size(), P, deck.route.max_shard_fraction, deck.route.overlap), P);
  s.val = by_path(single(nearest_paths(s.router, fv)), P);
  return s;
}

}  // namespace

std::string shard_file_name(const std::string& run_dir, int round) {
  return run_dir + (round == 0 ? "/shards.h5" : "/shards-r" + std::to_string(round) + ".h5");
}

bool load_shards(const std::string& file, const std::string& stamp, const Split& split, ShardFile& out) {
  int ok = 1;
  try {
    if (!fs::exists(file)) {
      ok = 0;
    } else {
      out = read_shard_file(file, split);
      ok = out.stamp == stamp;
    }
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

bool load_route(RunContext& c, const std::string& stamp, std::string&) {
  return load_shards(shard_file_name(c.run_dir, 0), stamp, c.split, c.shards);
}

int make_route(RunContext& c, const std::string& stamp) {
  const Deck& deck = c.deck;
  const double t0 = MPI_Wtime();
  const std::string file = shard_file_name(c.run_dir, 0);
  c.shards = route_documents(deck, c.split, c.features(), c.topo.paths, c.rank);
  save_shards(file, c.shards, stamp, c.split, c.rank);
  if (c.rank != 0 && deck.route.method == "kmeans") c.shards = read_shard_file(file, c.split);
  const double seconds = MPI_Wtime() - t0;
  c.seconds.emplace_back("route", seconds);
  char took[32];  // short routings (the scale test's) in hundredths of a second
  std::snprintf(took, sizeof took, "%.2fs", seconds);
  if (c.rank == 0)
    std::printf("stage route: %s%s in %s; training documents per path: %s -> %s\n", deck.route.method.c_str(),
                deck.route.method == "kmeans" ? (" (" + deck.route.routing + ")").c_str() : "",
                seconds < 60 ? took : format_duration(seconds).c_str(), shard_sizes(c.shards.train).c_str(), file.c_str());
  return kExitOk;
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
  s.round = round;
  s.has_router = true;
  s.router = deck.route.refit == "logistic" ? refit_router_logistic(ft, C, primary, P) : refit_router(ft, C, primary, P);
  s.train = by_path(paths_of_doc, P);
  s.val = by_path(single(nearest_paths(s.router, doc_features(fm, split.val, deck.route.prefix_tokens))), P);
  return s;
}

}  // namespace dipaco
