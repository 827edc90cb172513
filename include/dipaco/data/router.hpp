// The router: documents reach a path by the features of their first tokens.
// k-means (k-means++ start, Lloyd iterations, empty clusters repaired) fits
// centroids; product routing fits one k-means per level on that level's slice
// of the features (a path is the tuple of nearest centroids), flat routing one
// k-means with P centroids (factorised: its clusters placed on the product grid,
// data/factorise.hpp), residual routing one k-means per level on what
// the levels above leave (level 0 on the features, level 1 on the feature
// minus its level-0 centroid, ...: a path is a sum of one centroid per level,
// scored by how well that sum reconstructs the feature). Assignment turns per-path scores into shards,
// with a cap on a shard's share and optional overlap (k nearest paths).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dipaco/io/deck.hpp"  // Routing

namespace dipaco {

struct KMeansResult {
  std::vector<float> centroids;  // [k, dim]
  std::vector<int> labels;       // [n]
  int iterations = 0;
  double inertia = 0;  // sum of squared distances to the assigned centroid
};

// x: n rows of dim values, each row `stride` floats after the one before (0:
// dim). Deterministic for a seed; k <= n required. The best
// (lowest inertia) of kKMeansStarts k-means++ starts.
constexpr int kKMeansStarts = 4;
KMeansResult kmeans(const float* x, size_t n, int dim, int k, uint64_t seed, int max_iters, size_t stride = 0);

struct Router {
  std::string mode;                       // "product", "residual", "flat" or "logistic"
  int dim = 0;                            // feature width
  std::vector<int> modules_per_level;     // product, residual: centroids per level
  std::vector<std::vector<float>> centroids;  // product: per level [k_l, slice]; residual: per level [k_l, dim];
                                              // flat: one [P, dim];
                                              // logistic: one [P, dim + 1] (weights and bias)
  std::vector<double> offsets;  // flat: added to each path's score (a balanced router's); empty: none
  // Re-routing: a window stays on its document's own path unless another path
  // scores lower by more than this (0: the nearest path always).
  double stay = 0;

  int paths() const;
  // Squared distance from feature f [dim] to every path (lower is nearer).
  void path_scores(const float* f, double* out) const;
  int nearest_path(const float* f) const;
  // The path of a re-routed window of a document whose own path is `own` (-1:
  // none, the nearest): `scores` from path_scores.
  int pick(const double* scores, int own) const;
  int rerouted_path(const float* f, int own) const;
  // The mean squared distance from each centroid to its nearest other (flat):
  // the unit of a margin between scores, the same at any rank count.
  double centroid_spacing() const;

 private:
  void residual_scores(const float* f, double* out) const;
};

// Fits a router on features [n, dim] for a topology's modules per level.
Router fit_router(const std::vector<float>& features, int dim, const std::vector<int>& modules_per_level,
                  Routing mode, uint64_t seed, int max_iters);
// Nearest-centroid router refit to a given assignment (path per document):
// a flat router whose centroid p is the mean feature of p's documents
// (a path left without documents keeps the overall mean, so it is never chosen first).
Router refit_router(const std::vector<float>& features, int dim, const std::vector<int>& path_of_doc, int paths);
// The flat router of those centroids from their sums: sums [paths, dim] of the
// features of each path's rows, counts [paths] the rows. A path without rows
// gets the mean of all (the same rule as refit_router).
Router centroid_router(const std::vector<double>& sums, const std::vector<double>& counts, int dim, int paths);
// A logistic-regression (softmax) router fit to the same assignment: mode
// "logistic", centroids[0] holds one row [w_p, b_p] per path.
Router refit_router_logistic(const std::vector<float>& features, int dim, const std::vector<int>& path_of_doc, int paths,
                             int iters = 200);

// scores: [n, P], lower is better. Each document goes to its `overlap` best
// paths (one per choice round). In a round a path takes at most
// max(1, ceil(max_fraction * n)) documents; overflow goes to the next-best
// path with room. Documents with the clearest preference (largest margin
// between their best and second-best path) are placed first. Then a path under
// ceil(min_fraction * n) first choices takes the documents nearest to it from
// the shards above that floor.
std::vector<std::vector<int>> assign_paths(const std::vector<double>& scores, size_t n, int P, double max_fraction,
                                           int overlap, double min_fraction = 0);
// The most and fewest first choices a shard of n documents may hold.
inline size_t shard_floor(double min_fraction, size_t n) { return size_t(std::ceil(min_fraction * double(n) - 1e-9)); }
inline size_t shard_cap(double max_fraction, size_t n) { return std::max<size_t>(1, shard_floor(max_fraction, n)); }

}  // namespace dipaco
