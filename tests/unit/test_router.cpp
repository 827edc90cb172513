// k-means, routers, balanced assignment and stage stamps.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "dipaco/io/deck.hpp"
#include "dipaco/cmd/pipeline.hpp"
#include "dipaco/data/factorise.hpp"
#include "dipaco/data/router.hpp"

using namespace dipaco;

namespace {

// n points around each of the given centres, with Gaussian noise of width sigma.
std::vector<float> blobs(const std::vector<std::vector<float>>& centres, int n, float sigma, uint64_t seed,
                         std::vector<int>& truth) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0, sigma);
  std::vector<float> x;
  truth.clear();
  for (int i = 0; i < n; ++i)
    for (size_t c = 0; c < centres.size(); ++c) {
      for (float v : centres[c]) x.push_back(v + noise(rng));
      truth.push_back(int(c));
    }
  return x;
}

// 30 points per pair (a, b), each A[a] + B[b] plus Gaussian noise of width
// 0.2 in every feature; cell[i] = a * |B| + b.
std::vector<float> sums_of_factors(const std::vector<std::vector<float>>& A, const std::vector<std::vector<float>>& B,
                                   uint64_t seed, std::vector<int>& cell) {
  std::vector<float> f;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0, 0.2f);
  cell.clear();
  for (int rep = 0; rep < 30; ++rep)
    for (size_t a = 0; a < A.size(); ++a)
      for (size_t b = 0; b < B.size(); ++b) {
        for (size_t t = 0; t < A[a].size(); ++t) f.push_back(A[a][t] + B[b][t] + noise(rng));
        cell.push_back(int(a * B.size() + b));
      }
  return f;
}

// Every true cluster maps to exactly one label and vice versa.
void expect_same_partition(const std::vector<int>& a, const std::vector<int>& b) {
  ASSERT_EQ(a.size(), b.size());
  std::map<int, int> ab, ba;
  for (size_t i = 0; i < a.size(); ++i) {
    auto [it, fresh] = ab.emplace(a[i], b[i]);
    EXPECT_EQ(it->second, b[i]) << "point " << i;
    auto [jt, fresh2] = ba.emplace(b[i], a[i]);
    EXPECT_EQ(jt->second, a[i]) << "point " << i;
  }
}

const std::vector<std::vector<float>> kCentres = {
    {5, 0, 0, 0, 1, 0}, {0, 5, 0, 0, 0, 1}, {0, 0, 5, 0, 1, 1}, {0, 0, 0, 5, 0, 0}, {3, 3, 3, 3, 3, 3}};

}  // namespace

TEST(KMeans, RecoversSeparatedClusters) {
  std::vector<int> truth;
  auto x = blobs(kCentres, 60, 0.5f, 3, truth);
  for (uint64_t seed : {1, 2, 3}) {
    KMeansResult r = kmeans(x.data(), truth.size(), 6, 5, seed, 100);
    expect_same_partition(truth, r.labels);
    EXPECT_LT(r.iterations, 100);
    // Each centroid sits near one true centre.
    for (int j = 0; j < 5; ++j) {
      double best = 1e9;
      for (auto& c : kCentres) {
        double d = 0;
        for (int t = 0; t < 6; ++t) d += (r.centroids[j * 6 + t] - c[t]) * (r.centroids[j * 6 + t] - c[t]);
        best = std::min(best, d);
      }
      EXPECT_LT(best, 0.1);
    }
  }
}

TEST(KMeans, DeterministicForASeed) {
  std::vector<int> truth;
  auto x = blobs(kCentres, 40, 2.5f, 9, truth);  // overlapping: the result depends on the start
  KMeansResult a = kmeans(x.data(), truth.size(), 6, 7, 42, 50), b = kmeans(x.data(), truth.size(), 6, 7, 42, 50);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.centroids, b.centroids);
}

// The assignment step runs in parallel; the sums stay in document order, so
// the route (and every weight trained on it) is the same at any thread count.
TEST(KMeans, SameResultAtAnyThreadCount) {
  std::vector<int> truth;
  auto x = blobs(kCentres, 40, 2.5f, 9, truth);
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  KMeansResult a = kmeans(x.data(), truth.size(), 6, 7, 42, 50);
  omp_set_num_threads(3);
  KMeansResult b = kmeans(x.data(), truth.size(), 6, 7, 42, 50);
  omp_set_num_threads(before);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.centroids, b.centroids);
  EXPECT_EQ(a.inertia, b.inertia);
}

// A product router's level reads its columns of the features in place: the
// same result as k-means on a copy of those columns.
TEST(KMeans, ColumnsInPlaceAreTheCopiedColumns) {
  std::vector<int> truth;
  auto x = blobs(kCentres, 40, 2.5f, 9, truth);  // rows of 6
  const size_t n = truth.size();
  std::vector<float> cols(n * 3);
  for (size_t i = 0; i < n; ++i) std::copy_n(&x[i * 6 + 2], 3, &cols[i * 3]);
  KMeansResult a = kmeans(cols.data(), n, 3, 5, 11, 50), b = kmeans(x.data() + 2, n, 3, 5, 11, 50, 6);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.centroids, b.centroids);
  EXPECT_EQ(a.inertia, b.inertia);
}

TEST(KMeans, EmptyClustersAreRepaired) {
  // All points identical: k-means++ can only repeat a centroid, so a cluster
  // starts empty; the repair gives it a point.
  std::vector<float> x(8, 1.0f);
  KMeansResult r = kmeans(x.data(), 4, 2, 2, 7, 5);
  std::set<int> used(r.labels.begin(), r.labels.end());
  EXPECT_EQ(used.size(), 2u);
  EXPECT_THROW(kmeans(x.data(), 4, 2, 5, 7, 20), std::runtime_error);  // k > points
}

TEST(Router, ProductRoutingIsTheTupleOfNearestCentroids) {
  // Level 0 decides on the first 2 features, level 1 on the last 2; 2x3 paths.
  std::vector<float> f;
  std::vector<int> want;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> noise(0, 0.2f);
  for (int rep = 0; rep < 30; ++rep)
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 3; ++b) {
        f.insert(f.end(), {10.0f * a + noise(rng), noise(rng), 10.0f * b + noise(rng), -10.0f * b + noise(rng)});
        want.push_back(a * 3 + b);
      }
  Router r = fit_router(f, 4, {2, 3}, Routing::product, 1, 100);
  EXPECT_EQ(r.paths(), 6);
  std::vector<int> got;
  for (size_t i = 0; i < want.size(); ++i) got.push_back(r.nearest_path(&f[i * 4]));
  expect_same_partition(want, got);
  Router flat = fit_router(f, 4, {2, 3}, Routing::flat, 1, 100);
  std::vector<int> got_flat;
  for (size_t i = 0; i < want.size(); ++i) got_flat.push_back(flat.nearest_path(&f[i * 4]));
  expect_same_partition(want, got_flat);
}

// Two factors in the same features (not in separate halves): the larger one
// (a) is what level 0 finds, the smaller (b) what level 0's centroid leaves.
TEST(Router, ResidualRoutingFindsTheFactorLevelZeroLeaves) {
  const std::vector<std::vector<float>> A = {{10, 10, 10, 10}, {-10, -10, -10, -10}};
  const std::vector<std::vector<float>> B = {{4, -4, 0, 0}, {0, 0, 4, -4}, {-4, 4, -4, 4}};
  std::vector<int> want;
  const std::vector<float> f = sums_of_factors(A, B, 3, want);
  Router r = fit_router(f, 4, {2, 3}, Routing::residual, 1, 100);
  EXPECT_EQ(r.paths(), 6);
  ASSERT_EQ(r.centroids.size(), 2u);
  EXPECT_EQ(r.centroids[1].size(), 3u * 4);  // level 1 centroids span all features
  std::vector<int> got;
  for (size_t i = 0; i < want.size(); ++i) got.push_back(r.nearest_path(&f[i * 4]));
  expect_same_partition(want, got);
  // A path's level-0 module is the large factor: one level-0 module per value of a.
  std::set<int> level0[2];
  for (size_t i = 0; i < want.size(); ++i) level0[want[i] / 3].insert(got[i] / 3);
  EXPECT_EQ(level0[0].size(), 1u);
  EXPECT_EQ(level0[1].size(), 1u);
  EXPECT_NE(*level0[0].begin(), *level0[1].begin());
}

// Two factors mixed in all features, a 2x3 grid: flat k-means finds the 6
// clusters, and the factorised placement puts the clusters that share a
// factor on the same module, one factor per level.
TEST(Router, FactorisedRoutingPlacesClustersThatShareAFactorOnOneModule) {
  const std::vector<std::vector<float>> A = {{6, 0, 6, 0}, {0, 6, 0, -6}};
  const std::vector<std::vector<float>> B = {{3, 3, -3, 0}, {-3, 0, 3, 3}, {0, -3, 0, -3}};
  std::vector<int> cell, a_of, b_of;
  const std::vector<float> f = sums_of_factors(A, B, 9, cell);
  for (int c : cell) a_of.push_back(c / 3), b_of.push_back(c % 3);
  Router flat = fit_router(f, 4, {2, 3}, Routing::flat, 1, 100);
  Router r = fit_router(f, 4, {2, 3}, Routing::factorised, 1, 100);
  EXPECT_EQ(r.mode, "flat");  // read back, exported and served like any flat router
  EXPECT_EQ(r.paths(), 6);
  // The same clusters, rows placed: every row of r is a row of the flat router.
  std::multiset<std::vector<float>> rows_flat, rows;
  for (int p = 0; p < 6; ++p) {
    rows_flat.insert(std::vector<float>(&flat.centroids[0][p * 4], &flat.centroids[0][p * 4 + 4]));
    rows.insert(std::vector<float>(&r.centroids[0][p * 4], &r.centroids[0][p * 4 + 4]));
  }
  EXPECT_EQ(rows, rows_flat);
  // Level 0 (2 modules) holds the factor with 2 values, level 1 (3 modules) the one with 3.
  std::vector<int> level0, level1;
  for (size_t i = 0; i < a_of.size(); ++i) {
    const int p = r.nearest_path(&f[i * 4]);
    level0.push_back(p / 3), level1.push_back(p % 3);
  }
  expect_same_partition(a_of, level0);
  expect_same_partition(b_of, level1);
}

TEST(Factorise, NoPlacementHasALowerModuleScatter) {
  // 16 random centroids on a 4x4 grid: the placement beats every random one and the identity.
  std::mt19937_64 rng(4);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> c(16 * 8);
  for (float& v : c) v = g(rng);
  const std::vector<int> grid = {4, 4};
  std::vector<int> order = factorise(c, 8, grid, 3);
  std::vector<int> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int p = 0; p < 16; ++p) ASSERT_EQ(sorted[p], p);  // a permutation
  const double best = module_scatter(c, 8, grid, order);
  std::vector<int> other(16);
  std::iota(other.begin(), other.end(), 0);
  EXPECT_LT(best, module_scatter(c, 8, grid, other));
  for (int trial = 0; trial < 200; ++trial) {
    std::shuffle(other.begin(), other.end(), rng);
    EXPECT_LE(best, module_scatter(c, 8, grid, other) + 1e-9);
  }
  EXPECT_EQ(order, factorise(c, 8, grid, 3));  // deterministic for a seed
}

// Re-routing with a stay: the own path keeps a window while its score is within
// the stay of the lowest; the nearest path otherwise, and with no own path.
TEST(Router, AWindowStaysOnItsOwnPathWithinTheStay) {
  Router r;
  r.mode = "flat", r.dim = 1, r.modules_per_level = {3};
  r.centroids = {{0.0f, 2.0f, 10.0f}};
  EXPECT_DOUBLE_EQ(r.centroid_spacing(), (4.0 + 4.0 + 64.0) / 3);
  const float x = 0.5f;  // scores 0.25, 2.25, 90.25
  EXPECT_EQ(r.rerouted_path(&x, 1), 0) << "no stay: the nearest";
  r.stay = 2.0;
  EXPECT_EQ(r.rerouted_path(&x, 1), 1);
  EXPECT_EQ(r.rerouted_path(&x, 2), 0) << "path 2 is further than the stay";
  EXPECT_EQ(r.rerouted_path(&x, -1), 0);
  EXPECT_EQ(r.nearest_path(&x), 0);
  r.stay = 1.9;
  EXPECT_EQ(r.rerouted_path(&x, 1), 0);
}

TEST(Router, RefitToAnAssignment) {
  std::vector<float> f = {0, 0, 0, 1, 10, 10, 10, 11};
  Router r = refit_router(f, 2, {1, 1, 0, 0}, 3);
  EXPECT_EQ(r.nearest_path(f.data()), 1);
  EXPECT_EQ(r.nearest_path(&f[4]), 0);
  EXPECT_FLOAT_EQ(r.centroids[0][2 * 0 + 1], 10.5f);
}

TEST(Router, LogisticRefitLearnsTheAssignment) {
  std::vector<int> truth;
  auto x = blobs(kCentres, 40, 0.7f, 4, truth);
  // The assignment a loss-based re-sharding might produce: clusters 3 and 4 share path 3.
  std::vector<int> assigned = truth;
  for (int& a : assigned) a = std::min(a, 3);
  Router r = refit_router_logistic(x, 6, assigned, 4);
  EXPECT_EQ(r.mode, "logistic");
  EXPECT_EQ(r.paths(), 4);
  size_t right = 0;
  for (size_t i = 0; i < assigned.size(); ++i) right += r.nearest_path(&x[i * 6]) == assigned[i];
  EXPECT_GE(double(right) / double(assigned.size()), 0.99);
  EXPECT_EQ(r.centroids[0], refit_router_logistic(x, 6, assigned, 4).centroids[0]);  // deterministic
}

TEST(Assign, CapOverflowAndOverlap) {
  // Ten documents that all prefer path 0, then 1, then 2.
  const size_t n = 10;
  const int P = 3;
  std::vector<double> s;
  for (size_t i = 0; i < n; ++i) s.insert(s.end(), {0.0 + 0.01 * double(i), 1.0, 2.0});
  auto free = assign_paths(s, n, P, 1.0, 1);
  std::vector<int> size(P, 0);
  for (auto& p : free) ++size[p[0]];
  EXPECT_EQ(size, (std::vector<int>{8, 1, 1}));  // the empty paths take the nearest documents
  auto capped = assign_paths(s, n, P, 0.4, 1);
  size.assign(P, 0);
  for (auto& p : capped) ++size[p[0]];
  EXPECT_EQ(size, (std::vector<int>{4, 4, 2}));
  // The documents with the clearest preference keep path 0: margins fall with i.
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(capped[i][0], 0);
  auto two = assign_paths(s, n, P, 1.0, 2);
  for (auto& p : two) {
    ASSERT_EQ(p.size(), 2u);
    EXPECT_NE(p[0], p[1]);
  }
  EXPECT_THROW(assign_paths(s, n, P, 0.2, 1), std::runtime_error);  // 3 x 2 < 10
}

TEST(Assign, FloorTakesTheNearestDocumentsFromLargerShards) {
  // Twelve documents: nine prefer path 0, three path 1; path 2 is everyone's last
  // choice, its score falling with i (document 11 is nearest to it).
  const size_t n = 12;
  const int P = 3;
  std::vector<double> s;
  for (size_t i = 0; i < n; ++i) {
    const double p2 = 5.0 - 0.1 * double(i);
    if (i < 9) s.insert(s.end(), {0.0, 1.0, p2});
    else s.insert(s.end(), {1.0, 0.0, p2});
  }
  auto sizes = [&](const std::vector<std::vector<int>>& a) {
    std::vector<int> size(P, 0);
    for (auto& p : a) ++size[p[0]];
    return size;
  };
  // Without a floor path 2 (empty) takes a quarter of an even share: one document.
  EXPECT_EQ(sizes(assign_paths(s, n, P, 1.0, 1)), (std::vector<int>{9, 2, 1}));
  // A floor of 0.25 (3 documents): path 2 takes the three nearest to it from the
  // shards above the floor, which leaves path 1 its three.
  auto floored = assign_paths(s, n, P, 1.0, 1, 0.25);
  EXPECT_EQ(sizes(floored), (std::vector<int>{6, 3, 3}));
  for (size_t i : {6, 7, 8}) EXPECT_EQ(floored[i][0], 2);
  EXPECT_THROW(assign_paths(s, n, P, 1.0, 1, 0.34), std::runtime_error);  // 3 x 5 > 12
}

TEST(Stages, AChangedValueTouchesExactlyTheStagesThatDependOnIt) {
  auto stamps = [](const std::vector<std::string>& ov) {
    Deck d = load_deck("", ov);
    std::vector<std::string> s;
    for (Stage st : {Stage::prepare, Stage::warm_start, Stage::route, Stage::train, Stage::evaluate})
      s.push_back(stage_stamp(d, st));
    return s;
  };
  auto base = stamps({});
  auto changed = [&](const std::string& ov) {
    auto s = stamps({ov});
    std::vector<bool> out;
    for (size_t i = 0; i < s.size(); ++i) out.push_back(s[i] != base[i]);
    return out;
  };
  using V = std::vector<bool>;
  EXPECT_EQ(changed("data.val_fraction=0.2"), (V{true, true, true, true, true}));
  EXPECT_EQ(changed("route.warm_steps=50"), (V{false, true, true, true, true}));
  EXPECT_EQ(changed("route.overlap=2"), (V{false, false, true, true, true}));
  EXPECT_EQ(changed("train.steps=50"), (V{false, false, false, true, true}));
  EXPECT_EQ(changed("route.em_candidates=2"), (V{false, false, false, true, true}));
  EXPECT_EQ(changed("eval.reroute_every=64"), (V{false, false, false, false, true}));
  EXPECT_EQ(changed("eval.reroute_router=starts"), (V{false, false, false, false, true}));
  EXPECT_EQ(changed("dipaco.sharing_scale=capped"), (V{false, false, false, true, true}));
  EXPECT_EQ(changed("run.log_every=3"), (V{false, false, false, false, false}));
  EXPECT_EQ(stamp_changes(base[3], stamps({"train.steps=50"})[3]), "train.steps: 400 -> 50");
}
