#include "dipaco/data/factorise.hpp"

#include <algorithm>
#include <numeric>
#include <random>

#include "dipaco/dist/topology.hpp"

namespace dipaco {
namespace {

constexpr int kStarts = 8;  // swap descents from random placements; the lowest scatter wins

// module[p][l]: path p's module at level l (the topology's numbering).
std::vector<std::vector<int>> module_table(const std::vector<int>& modules_per_level) {
  std::vector<std::vector<int>> t;
  for (int p = 0; p < path_count(modules_per_level); ++p) t.push_back(path_modules(modules_per_level, p));
  return t;
}

// A placement's member sums per (level, module). The scatter of a module with n
// members and sum S is sum ||c||^2 - ||S||^2 / n, so swapping the clusters of
// cells a and b (delta = c_b - c_a moves into a's module and out of b's) changes
// it only where a and b sit in different modules, by
// -(||S_a + delta||^2 - ||S_a||^2 + ||S_b - delta||^2 - ||S_b||^2) / n
// = -(2 (S_a - S_b) . delta + 2 ||delta||^2) / n: O(levels * dim) per swap.
struct Placement {
  const std::vector<float>& c;
  int dim;
  const std::vector<int>& mpl;
  std::vector<int> order;
  std::vector<std::vector<int>> module;               // [path][level]
  std::vector<std::vector<std::vector<double>>> sums;  // [level][module][dim]

  Placement(const std::vector<float>& centroids, int d, const std::vector<int>& m, std::vector<int> o)
      : c(centroids), dim(d), mpl(m), order(std::move(o)), module(module_table(m)) {
    for (int l = 0; l < int(mpl.size()); ++l) sums.emplace_back(mpl[l], std::vector<double>(dim, 0.0));
    for (int p = 0; p < int(order.size()); ++p)
      for (int l = 0; l < int(mpl.size()); ++l) {
        auto& s = sums[l][module[p][l]];
        for (int t = 0; t < dim; ++t) s[t] += c[size_t(order[p]) * dim + t];
      }
  }
  double delta(int a, int b, int t) const { return double(c[size_t(order[b]) * dim + t]) - c[size_t(order[a]) * dim + t]; }
  // How much the scatter falls if cells a and b swap clusters.
  double gain(int a, int b) const {
    const int P = int(order.size());
    double g = 0;
    for (int l = 0; l < int(mpl.size()); ++l) {
      const int ma = module[a][l], mb = module[b][l];
      if (ma == mb) continue;
      double dot = 0, norm = 0;
      for (int t = 0; t < dim; ++t) {
        const double d = delta(a, b, t);
        dot += (sums[l][ma][t] - sums[l][mb][t]) * d, norm += d * d;
      }
      g += (2 * dot + 2 * norm) / (P / mpl[l]);
    }
    return g;
  }
  void swap(int a, int b) {
    for (int l = 0; l < int(mpl.size()); ++l) {
      const int ma = module[a][l], mb = module[b][l];
      if (ma == mb) continue;
      for (int t = 0; t < dim; ++t) {
        const double d = delta(a, b, t);
        sums[l][ma][t] += d, sums[l][mb][t] -= d;
      }
    }
    std::swap(order[a], order[b]);
  }
};

}  // namespace

double module_scatter(const std::vector<float>& centroids, int dim, const std::vector<int>& modules_per_level,
                      const std::vector<int>& order) {
  // Directly from the definition (the reference the swap descent's sums are tested against).
  const int P = int(order.size());
  const auto module = module_table(modules_per_level);
  double total = 0;
  std::vector<double> mean(dim);
  for (int l = 0; l < int(modules_per_level.size()); ++l)
    for (int m = 0; m < modules_per_level[l]; ++m) {
      std::vector<int> members;
      for (int p = 0; p < P; ++p)
        if (module[p][l] == m) members.push_back(order[p]);
      std::fill(mean.begin(), mean.end(), 0.0);
      for (int k : members)
        for (int t = 0; t < dim; ++t) mean[t] += centroids[size_t(k) * dim + t] / double(members.size());
      for (int k : members)
        for (int t = 0; t < dim; ++t) {
          const double e = centroids[size_t(k) * dim + t] - mean[t];
          total += e * e;
        }
    }
  return total;
}

std::vector<int> factorise(const std::vector<float>& centroids, int dim, const std::vector<int>& modules_per_level,
                           uint64_t seed) {
  const int P = path_count(modules_per_level);
  std::vector<int> best(P);
  std::iota(best.begin(), best.end(), 0);
  double best_cost = module_scatter(centroids, dim, modules_per_level, best);
  std::mt19937_64 rng(seed);
  for (int start = 0; start < kStarts; ++start) {
    std::vector<int> order(P);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    Placement pl(centroids, dim, modules_per_level, order);
    const double tiny = 1e-12 * (1.0 + module_scatter(centroids, dim, modules_per_level, order));
    // First-improvement descent over pairwise swaps until no swap lowers the scatter.
    for (bool improved = true; improved;) {
      improved = false;
      for (int a = 0; a < P; ++a)
        for (int b = a + 1; b < P; ++b)
          if (pl.gain(a, b) > tiny) pl.swap(a, b), improved = true;
    }
    const double cost = module_scatter(centroids, dim, modules_per_level, pl.order);
    if (cost < best_cost) best_cost = cost, best = pl.order;
  }
  return best;
}

}  // namespace dipaco
