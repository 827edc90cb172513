#include "dipaco/data/router.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>

#include "dipaco/data/factorise.hpp"
#include "dipaco/dist/topology.hpp"

namespace dipaco {
namespace {

double sqdist(const float* a, const float* b, int d) {
  double s = 0;
  for (int i = 0; i < d; ++i) {
    double t = double(a[i]) - double(b[i]);
    s += t * t;
  }
  return s;
}

// Index of the nearest of k centroids [k, d] to x, and its squared distance.
int nearest(const float* x, const float* c, int k, int d, double* dist) {
  int best = 0;
  double bd = std::numeric_limits<double>::infinity();
  for (int j = 0; j < k; ++j) {
    double t = sqdist(x, c + size_t(j) * d, d);
    if (t < bd) bd = t, best = j;
  }
  if (dist) *dist = bd;
  return best;
}

// Level l of a product router routes on its own contiguous slice of the features.
void level_slice(int dim, int levels, int l, int& from, int& width) {
  from = dim * l / levels;
  width = dim * (l + 1) / levels - from;
}

}  // namespace

namespace {

// One k-means++ start followed by Lloyd iterations.
KMeansResult kmeans_once(const float* x, size_t n, int d, size_t stride, int k, uint64_t seed, int max_iters) {
  KMeansResult r;
  r.centroids.resize(size_t(k) * d);
  std::mt19937_64 rng(seed);
  // k-means++: each next centroid is drawn with probability proportional to D^2.
  std::vector<double> d2(n, std::numeric_limits<double>::infinity());
  size_t first = size_t(rng() % n);
  std::copy_n(x + first * stride, d, r.centroids.data());
  for (int j = 1; j < k; ++j) {
    double total = 0;
    const float* prev = &r.centroids[size_t(j - 1) * d];
    // The distances in parallel (each its own), their sum in document order: the same at any thread count.
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) d2[i] = std::min(d2[i], sqdist(x + i * stride, prev, d));
    for (size_t i = 0; i < n; ++i) total += d2[i];
    size_t pick = 0;
    if (total > 0) {
      double u = std::uniform_real_distribution<double>(0, total)(rng), acc = 0;
      for (pick = 0; pick + 1 < n; ++pick)
        if ((acc += d2[pick]) > u) break;
    } else {
      pick = size_t(rng() % n);  // all points coincide with a centroid
    }
    std::copy_n(x + pick * stride, d, &r.centroids[size_t(j) * d]);
  }

  r.labels.assign(n, -1);
  std::vector<double> dist(n), sum(size_t(k) * d);
  std::vector<size_t> count(k);
  for (r.iterations = 0; r.iterations < std::max(1, max_iters); ++r.iterations) {
    // Each document's nearest centroid on its own (the sums below stay in document order).
    int changed = 0;
#pragma omp parallel for schedule(static) reduction(| : changed)
    for (size_t i = 0; i < n; ++i) {
      int j = nearest(x + i * stride, r.centroids.data(), k, d, &dist[i]);
      changed |= j != r.labels[i];
      r.labels[i] = j;
    }
    if (!changed && r.iterations > 0) break;
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(count.begin(), count.end(), 0);
    for (size_t i = 0; i < n; ++i) {
      ++count[r.labels[i]];
      for (int t = 0; t < d; ++t) sum[size_t(r.labels[i]) * d + t] += x[i * stride + t];
    }
    // Repair empty clusters: each takes the point farthest from its centroid.
    for (int j = 0; j < k; ++j) {
      if (count[j] > 0) continue;
      size_t far = size_t(std::max_element(dist.begin(), dist.end()) - dist.begin());
      int from = r.labels[far];
      --count[from], ++count[j];
      for (int t = 0; t < d; ++t) sum[size_t(from) * d + t] -= x[far * stride + t], sum[size_t(j) * d + t] += x[far * stride + t];
      r.labels[far] = j, dist[far] = 0;
    }
    for (int j = 0; j < k; ++j)
      for (int t = 0; t < d; ++t) r.centroids[size_t(j) * d + t] = float(sum[size_t(j) * d + t] / double(count[j]));
  }
  r.inertia = 0;
  for (size_t i = 0; i < n; ++i) r.inertia += sqdist(x + i * stride, &r.centroids[size_t(r.labels[i]) * d], d);
  return r;
}

}  // namespace

KMeansResult kmeans(const float* x, size_t n, int d, int k, uint64_t seed, int max_iters, size_t stride) {
  if (stride == 0) stride = size_t(d);
  if (k < 1 || size_t(k) > n)
    throw std::runtime_error("k-means needs 1 <= k <= points (k = " + std::to_string(k) + ", points = " + std::to_string(n) + ")");
  // k-means++ can still start two centroids in one cluster; the best of a few starts rarely does.
  KMeansResult best;
  for (int start = 0; start < kKMeansStarts; ++start) {
    KMeansResult r = kmeans_once(x, n, d, stride, k, seed * 0x9E3779B97F4A7C15ULL + uint64_t(start), max_iters);
    if (start == 0 || r.inertia < best.inertia) best = std::move(r);
  }
  return best;
}

int Router::paths() const {
  if (mode == "flat") return int(centroids[0].size() / dim);
  if (mode == "logistic") return int(centroids[0].size() / (dim + 1));
  return path_count(modules_per_level);
}

void Router::path_scores(const float* f, double* out) const {
  if (mode == "logistic") {  // rows [w_p, b_p]: the score is the negative logit
    const int P = paths();
    for (int p = 0; p < P; ++p) {
      const float* w = &centroids[0][size_t(p) * (dim + 1)];
      double z = w[dim];
      for (int t = 0; t < dim; ++t) z += double(w[t]) * f[t];
      out[p] = -z;
    }
    return;
  }
  if (mode == "flat") {
    const int P = paths();
    for (int p = 0; p < P; ++p) out[p] = sqdist(f, &centroids[0][size_t(p) * dim], dim) + (offsets.empty() ? 0.0 : offsets[p]);
    return;
  }
  if (mode == "residual") {
    residual_scores(f, out);
    return;
  }
  // Product: a path's score is the sum of its modules' distances, level by level
  // (level 0 most significant in the path index, as in the topology).
  const int levels = int(modules_per_level.size());
  std::vector<std::vector<double>> per_level(levels);
  for (int l = 0; l < levels; ++l) {
    int from, width;
    level_slice(dim, levels, l, from, width);
    for (int m = 0; m < modules_per_level[l]; ++m)
      per_level[l].push_back(sqdist(f + from, &centroids[l][size_t(m) * width], width));
  }
  const int P = paths();
  for (int p = 0; p < P; ++p) {
    double s = 0;
    for (int l = levels - 1, q = p; l >= 0; --l) s += per_level[l][q % modules_per_level[l]], q /= modules_per_level[l];
    out[p] = s;
  }
}

// Residual: path p = (m_0, m_1, ...) reconstructs f as the sum of its
// centroids; its score is the squared error of that sum.
void Router::residual_scores(const float* f, double* out) const {
  const int levels = int(modules_per_level.size()), P = paths();
  std::vector<float> sum(dim);
  for (int p = 0; p < P; ++p) {
    std::fill(sum.begin(), sum.end(), 0.0f);
    for (int l = levels - 1, q = p; l >= 0; --l) {
      const float* c = &centroids[l][size_t(q % modules_per_level[l]) * dim];
      for (int t = 0; t < dim; ++t) sum[t] += c[t];
      q /= modules_per_level[l];
    }
    out[p] = sqdist(f, sum.data(), dim);
  }
}

int Router::nearest_path(const float* f) const { return rerouted_path(f, -1); }

int Router::rerouted_path(const float* f, int own) const {
  std::vector<double> s(paths());
  path_scores(f, s.data());
  return pick(s.data(), own);
}

int Router::pick(const double* scores, int own) const {
  const int best = int(std::min_element(scores, scores + paths()) - scores);
  return own >= 0 && stay > 0 && scores[own] <= scores[best] + stay ? own : best;
}

double Router::centroid_spacing() const {
  const int P = paths();
  double unit = 0;
  for (int p = 0; p < P; ++p) {
    double best = INFINITY;
    for (int q = 0; q < P; ++q)
      if (q != p) best = std::min(best, sqdist(&centroids[0][size_t(p) * dim], &centroids[0][size_t(q) * dim], dim));
    unit += std::isfinite(best) ? best / P : 0;
  }
  return unit > 0 ? unit : 1;
}

Router fit_router(const std::vector<float>& features, int dim, const std::vector<int>& modules_per_level,
                  Routing mode, uint64_t seed, int max_iters) {
  Router r;
  r.mode = name(mode), r.dim = dim, r.modules_per_level = modules_per_level;
  const size_t n = features.size() / dim;
  const int P = path_count(modules_per_level);
  if (mode == Routing::flat || mode == Routing::factorised) {
    r.centroids.push_back(kmeans(features.data(), n, dim, P, seed, max_iters).centroids);
    if (mode == Routing::factorised) {  // a flat router whose rows are placed so that near clusters share modules
      const std::vector<int> order = factorise(r.centroids[0], dim, modules_per_level, seed);
      std::vector<float> placed(r.centroids[0].size());
      for (int p = 0; p < P; ++p)
        std::copy_n(&r.centroids[0][size_t(order[p]) * dim], dim, &placed[size_t(p) * dim]);
      r.centroids[0] = std::move(placed);
      r.mode = "flat";
    }
    return r;
  }
  const int levels = int(modules_per_level.size());
  if (mode == Routing::residual) {
    // Each level clusters what the levels above leave unexplained.
    std::vector<float> rest = features;
    for (int l = 0; l < levels; ++l) {
      KMeansResult km = kmeans(rest.data(), n, dim, modules_per_level[l], seed + 7919 * uint64_t(l), max_iters);
      for (size_t i = 0; i < n; ++i)
        for (int t = 0; t < dim; ++t) rest[i * dim + t] -= km.centroids[size_t(km.labels[i]) * dim + t];
      r.centroids.push_back(std::move(km.centroids));
    }
    return r;
  }
  if (dim < levels) throw std::runtime_error("product routing needs at least one feature per level");
  for (int l = 0; l < levels; ++l) {
    int from, width;
    level_slice(dim, levels, l, from, width);
    // The level's columns read in place (a copy would add half the sample).
    r.centroids.push_back(
        kmeans(features.data() + from, n, width, modules_per_level[l], seed + 7919 * uint64_t(l), max_iters, size_t(dim)).centroids);
  }
  return r;
}

Router refit_router(const std::vector<float>& features, int dim, const std::vector<int>& path_of_doc, int paths) {
  std::vector<double> sum(size_t(paths) * dim, 0.0), count(paths, 0.0);
  for (size_t i = 0; i < path_of_doc.size(); ++i) {
    ++count[path_of_doc[i]];
    for (int t = 0; t < dim; ++t) sum[size_t(path_of_doc[i]) * dim + t] += features[i * dim + t];
  }
  return centroid_router(sum, count, dim, paths);
}

Router centroid_router(const std::vector<double>& sums, const std::vector<double>& counts, int dim, int paths) {
  std::vector<double> all(dim, 0.0);
  double n = 0;
  for (int p = 0; p < paths; ++p) {
    n += counts[p];
    for (int t = 0; t < dim; ++t) all[t] += sums[size_t(p) * dim + t];
  }
  Router r;
  r.mode = "flat", r.dim = dim, r.modules_per_level = {paths};
  r.centroids.assign(1, std::vector<float>(size_t(paths) * dim));
  for (int p = 0; p < paths; ++p)
    for (int t = 0; t < dim; ++t)
      r.centroids[0][size_t(p) * dim + t] =
          float(counts[p] > 0 ? sums[size_t(p) * dim + t] / counts[p] : all[t] / std::max(n, 1.0));
  return r;
}

Router refit_router_logistic(const std::vector<float>& features, int dim, const std::vector<int>& path_of_doc, int paths,
                             int iters) {
  // Softmax regression, full batch, gradient descent with momentum and a little
  // L2; deterministic (no sampling).
  const size_t n = path_of_doc.size();
  const int P = paths, D = dim + 1;
  const double lr = 0.5, momentum = 0.9, l2 = 1e-4;
  std::vector<double> w(size_t(P) * D, 0.0), vel(w.size(), 0.0), grad(w.size()), z(P);
  for (int it = 0; it < iters; ++it) {
    std::fill(grad.begin(), grad.end(), 0.0);
    for (size_t i = 0; i < n; ++i) {
      const float* f = &features[i * dim];
      double top = -INFINITY, sum = 0;
      for (int p = 0; p < P; ++p) {
        const double* wp = &w[size_t(p) * D];
        double v = wp[dim];
        for (int t = 0; t < dim; ++t) v += wp[t] * f[t];
        z[p] = v, top = std::max(top, v);
      }
      for (int p = 0; p < P; ++p) sum += (z[p] = std::exp(z[p] - top));
      for (int p = 0; p < P; ++p) {
        const double g = (z[p] / sum - (p == path_of_doc[i] ? 1.0 : 0.0)) / double(n);
        double* gp = &grad[size_t(p) * D];
        for (int t = 0; t < dim; ++t) gp[t] += g * f[t];
        gp[dim] += g;
      }
    }
    for (size_t j = 0; j < w.size(); ++j) {
      vel[j] = momentum * vel[j] - lr * (grad[j] + l2 * w[j]);
      w[j] += vel[j];
    }
  }
  Router r;
  r.mode = "logistic", r.dim = dim, r.modules_per_level = {paths};
  r.centroids.assign(1, std::vector<float>(w.begin(), w.end()));
  return r;
}

std::vector<std::vector<int>> assign_paths(const std::vector<double>& scores, size_t n, int P, double max_fraction,
                                           int overlap, double min_fraction) {
  overlap = std::clamp(overlap, 1, P);
  const size_t cap = shard_cap(max_fraction, n), floor = shard_floor(min_fraction, n);
  if (cap * size_t(P) < n)
    throw std::runtime_error("route.max_shard_fraction = " + std::to_string(max_fraction) + " cannot hold " +
                             std::to_string(n) + " documents in " + std::to_string(P) + " paths (needs >= 1/P)");
  if (floor * size_t(P) > n)
    throw std::runtime_error("route.min_shard_fraction = " + std::to_string(min_fraction) + " asks more than " +
                             std::to_string(n) + " documents of " + std::to_string(P) + " paths (needs <= 1/P)");
  // Each document's paths from best to worst (ties: lower path index).
  std::vector<std::vector<int>> order(n, std::vector<int>(P));
  std::vector<double> margin(n, 0.0);
  for (size_t i = 0; i < n; ++i) {
    const double* s = &scores[i * P];
    std::iota(order[i].begin(), order[i].end(), 0);
    std::stable_sort(order[i].begin(), order[i].end(), [&](int a, int b) { return s[a] < s[b]; });
    margin[i] = P > 1 ? s[order[i][1]] - s[order[i][0]] : 0.0;
  }
  std::vector<size_t> by_margin(n);
  std::iota(by_margin.begin(), by_margin.end(), size_t(0));
  std::stable_sort(by_margin.begin(), by_margin.end(), [&](size_t a, size_t b) { return margin[a] > margin[b]; });
  std::vector<std::vector<int>> out(n);
  for (int round = 0; round < overlap; ++round) {
    std::vector<size_t> load(P, 0);
    for (size_t i : by_margin)
      for (int p : order[i]) {
        if (load[p] >= cap || std::find(out[i].begin(), out[i].end(), p) != out[i].end()) continue;
        out[i].push_back(p), ++load[p];
        break;
      }
  }
  // A path under the floor takes the documents nearest to it from shards above
  // it, so that no path is starved. A path no document chose (possible with
  // product routing: an unused pair of modules) has a floor of a quarter of an
  // even share even when the deck sets none, so that it has something to train on.
  std::vector<size_t> size(P, 0);
  for (auto& o : out)
    if (!o.empty()) ++size[o[0]];
  for (int p = 0; p < P; ++p) {
    const size_t want = size[p] == 0 ? std::max({floor, size_t(1), n / (4 * size_t(P))}) : floor;
    if (size[p] >= want) continue;
    std::vector<size_t> near(n);
    std::iota(near.begin(), near.end(), size_t(0));
    std::stable_sort(near.begin(), near.end(), [&](size_t a, size_t b) { return scores[a * P + p] < scores[b * P + p]; });
    for (size_t i : near) {
      if (size[p] >= want) break;
      if (out[i].empty() || size[out[i][0]] <= want || std::find(out[i].begin(), out[i].end(), p) != out[i].end()) continue;
      --size[out[i][0]], ++size[p];
      out[i][0] = p;
    }
  }
  return out;
}

}  // namespace dipaco
