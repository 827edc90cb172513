#include "dipaco/data/window_router.hpp"

#include <algorithm>
#include <cmath>

#include "dipaco/data/routed_eval.hpp"
#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/log.hpp"

namespace dipaco {

namespace {
constexpr int kBalanceIterations = 200;
}  // namespace

Router window_router(const Assignment& train, const DocList& docs, const Topology& topo, int rank,
                     FeatureModel& features, const Deck& deck, size_t every, size_t window, bool balanced,
                     MPI_Comm world) {
  const int P = topo.paths, dim = features.dim();
  const size_t prefix = size_t(deck.route.prefix_tokens);
  // The feature sums per path [P, dim], then the window counts [P]: one sum over ranks.
  std::vector<double> sums(size_t(P) * (dim + 1), 0.0);
  double* counts = &sums[size_t(P) * dim];
  std::vector<float> read;  // balanced: the features of the windows this rank read
  if (topo.rank_in_path(rank) == 0 && every > 0)  // a path's other ranks hold the same documents
    for (int p : topo.paths_of_rank(rank)) {
      if (size_t(p) >= train.size() || train[p].empty()) continue;
      const size_t n = std::min(train[p].size(), kWindowRouterDocs);
      const std::vector<Document> held =
          docs.subset(std::vector<int>(train[p].begin(), train[p].begin() + long(n))).documents(0, n);
      std::vector<FeatureWindow> windows;
      for (const Document& d : held)
        for (const Segment& s : scored_segments(d, deck, every))
          if (rerouted(s.from, prefix, window)) windows.push_back({&d, s.from - window});
      if (windows.empty()) continue;
      const std::vector<float> f = features.local_features(windows);
      if (balanced) read.insert(read.end(), f.begin(), f.end());
      for (size_t w = 0; w < windows.size(); ++w)
        for (int t = 0; t < dim; ++t) sums[size_t(p) * dim + t] += f[w * dim + t];
      counts[p] += double(windows.size());
    }
  watched("the window router's sums",
          [&] { MPI_Allreduce(MPI_IN_PLACE, sums.data(), int(sums.size()), MPI_DOUBLE, MPI_SUM, world); });
  Router r = centroid_router(std::vector<double>(sums.begin(), sums.begin() + long(P) * dim),
                             std::vector<double>(counts, counts + P), dim, P);
  if (balanced) {
    const double off = balance_router(r, read, std::vector<double>(counts, counts + P), world);
    say("windows router: balanced, each path's share of the windows within %.0f%% of what its documents brought\n",
        100 * off);
  }
  return r;
}

double balance_router(Router& r, const std::vector<float>& f, const std::vector<double>& target, MPI_Comm world) {
  const int P = r.paths(), dim = r.dim;
  const size_t n = f.size() / size_t(dim);
  r.offsets.assign(size_t(P), 0.0);
  std::vector<double> d(n * size_t(P));
  for (size_t i = 0; i < n; ++i) r.path_scores(&f[i * size_t(dim)], &d[i * size_t(P)]);
  // The offsets' unit: the mean squared distance between nearest centroids (the
  // same on every rank, whatever the rank count).
  double unit = 0;
  for (int p = 0; p < P; ++p) {
    double best = INFINITY;
    for (int q = 0; q < P; ++q)
      if (q != p) {
        double s = 0;
        for (int t = 0; t < dim; ++t) {
          const double x = double(r.centroids[0][size_t(p) * dim + t]) - r.centroids[0][size_t(q) * dim + t];
          s += x * x;
        }
        best = std::min(best, s);
      }
    unit += std::isfinite(best) ? best / P : 0;
  }
  double total = 0;
  for (double t : target) total += t;
  double off = 0;
  for (int it = 0; it < kBalanceIterations; ++it) {
    std::vector<double> got(size_t(P), 0.0);
    for (size_t i = 0; i < n; ++i) {
      const double* row = &d[i * size_t(P)];
      int best = 0;
      for (int p = 1; p < P; ++p)
        if (row[p] + r.offsets[size_t(p)] < row[best] + r.offsets[size_t(best)]) best = p;
      got[size_t(best)] += 1;
    }
    watched("the window router's balance", [&] { MPI_Allreduce(MPI_IN_PLACE, got.data(), P, MPI_DOUBLE, MPI_SUM, world); });
    off = 0;
    for (int p = 0; p < P; ++p) off = std::max(off, std::abs(got[size_t(p)] - target[size_t(p)]) / std::max(target[size_t(p)], 1.0));
    if (it + 1 == kBalanceIterations || total == 0) break;
    // A path that took more than it brought moves away, one that took fewer closer.
    const double step = 0.5 * unit / (1 + it / 20.0);
    for (int p = 0; p < P; ++p) r.offsets[size_t(p)] += step * std::log((got[size_t(p)] + 1) / (target[size_t(p)] + 1));
  }
  return off;
}

Router reroute_router(const Assignment& train, const DocList& docs, const Topology& topo, int rank,
                      FeatureModel& features, const Deck& deck, MPI_Comm world) {
  return window_router(train, docs, topo, rank, features, deck, size_t(deck.eval.reroute_every), reroute_window(deck),
                       deck.route.segment_tokens > 0, world);
}

}  // namespace dipaco
