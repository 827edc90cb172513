#include "dipaco/data/window_router.hpp"

#include <algorithm>

#include "dipaco/data/routed_eval.hpp"
#include "dipaco/dist/watchdog.hpp"

namespace dipaco {

Router window_router(const Assignment& train, const DocList& docs, const Topology& topo, int rank,
                     FeatureModel& features, const Deck& deck, size_t every, size_t window, MPI_Comm world) {
  const int P = topo.paths, dim = features.dim();
  const size_t prefix = size_t(deck.route.prefix_tokens);
  // The feature sums per path [P, dim], then the window counts [P]: one sum over ranks.
  std::vector<double> sums(size_t(P) * (dim + 1), 0.0);
  double* counts = &sums[size_t(P) * dim];
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
      for (size_t w = 0; w < windows.size(); ++w)
        for (int t = 0; t < dim; ++t) sums[size_t(p) * dim + t] += f[w * dim + t];
      counts[p] += double(windows.size());
    }
  watched("the window router's sums",
          [&] { MPI_Allreduce(MPI_IN_PLACE, sums.data(), int(sums.size()), MPI_DOUBLE, MPI_SUM, world); });
  return centroid_router(std::vector<double>(sums.begin(), sums.begin() + long(P) * dim),
                         std::vector<double>(counts, counts + P), dim, P);
}

Router reroute_router(const Assignment& train, const DocList& docs, const Topology& topo, int rank,
                      FeatureModel& features, const Deck& deck, MPI_Comm world) {
  return window_router(train, docs, topo, rank, features, deck, size_t(deck.eval.reroute_every), reroute_window(deck), world);
}

}  // namespace dipaco
