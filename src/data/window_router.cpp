#include "dipaco/data/window_router.hpp"

#include <algorithm>

#include "dipaco/dist/watchdog.hpp"

namespace dipaco {

Router window_router(const Assignment& train, const DocList& docs, const Topology& topo, int rank,
                     FeatureModel& features, const Deck& deck, MPI_Comm world) {
  const int P = topo.paths, dim = features.dim();
  const size_t prefix = size_t(deck.route.prefix_tokens), every = size_t(deck.eval.reroute_every);
  // Per path: the feature sums (dim) and the window count, summed over ranks.
  std::vector<double> sums(size_t(P) * (dim + 1), 0.0);
  if (topo.rank_in_path(rank) == 0 && every > 0)  // a path's other ranks hold the same documents
    for (int p : topo.paths_of_rank(rank)) {
      if (size_t(p) >= train.size() || train[p].empty()) continue;
      const size_t n = std::min(train[p].size(), kWindowRouterDocs);
      const std::vector<Document> held =
          docs.subset(std::vector<int>(train[p].begin(), train[p].begin() + long(n))).documents(0, n);
      std::vector<FeatureWindow> windows;
      for (const Document& d : held) {
        const size_t end = std::min(d.tokens() + 1, size_t(deck.eval.doc_bytes));
        for (size_t s = prefix + every; s < end; s += every) windows.push_back({&d, s - prefix});
      }
      if (windows.empty()) continue;
      const std::vector<float> f = features.local_features(windows);
      double* out = &sums[size_t(p) * (dim + 1)];
      for (size_t w = 0; w < windows.size(); ++w)
        for (int t = 0; t < dim; ++t) out[t] += f[w * dim + t];
      out[dim] += double(windows.size());
    }
  watched("the window router's sums",
          [&] { MPI_Allreduce(MPI_IN_PLACE, sums.data(), int(sums.size()), MPI_DOUBLE, MPI_SUM, world); });
  std::vector<double> all(dim + 1, 0.0);
  for (int p = 0; p < P; ++p)
    for (int t = 0; t <= dim; ++t) all[t] += sums[size_t(p) * (dim + 1) + t];
  Router r;
  r.mode = "flat", r.dim = dim, r.modules_per_level = {P};
  r.centroids.assign(1, std::vector<float>(size_t(P) * dim));
  for (int p = 0; p < P; ++p) {
    const double* s = &sums[size_t(p) * (dim + 1)];
    const double* from = s[dim] > 0 ? s : all.data();
    const double n = std::max(from[dim], 1.0);
    for (int t = 0; t < dim; ++t) r.centroids[0][size_t(p) * dim + t] = float(from[t] / n);
  }
  return r;
}

}  // namespace dipaco
