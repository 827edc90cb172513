// Routing over real MPI ranks: shard files round-trip, routing features do not
// depend on the rank count, and the routed evaluation of a one-path model is
// the model's plain loss on each document after its prefix.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "dipaco/io/checkpoint.hpp"
#include "dipaco/data/features.hpp"
#include "dipaco/data/routed_eval.hpp"
#include "dipaco/data/router.hpp"
#include "dipaco/data/shards.hpp"
#include "dipaco/data/segment_shards.hpp"
#include "dipaco/data/window_router.hpp"
#include "dipaco/dist/topology.hpp"
#include "harness.hpp"

using namespace dipaco;
using namespace testing_mpi;

namespace {

std::vector<std::string> one_path_deck() {
  return {"model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.context=64", "train.batch_size=4",
          "train.steps=4",    "train.warmup=1",   "eval.every=0",    "eval.batches=1",   "run.threads=1",
          "run.log_every=1000", "route.prefix_tokens=8", "eval.doc_bytes=64"};
}

// one_path_deck() with `keys`, and the feature model over `window` tokens of its initialisation of `seed`.
struct DeckFeatures {
  Deck d;
  std::unique_ptr<Kernels> k = make_cpu_kernels();
  ModelShape shape;
  std::vector<float> params;
  FeatureModel fm;
  DeckFeatures(const std::vector<std::string>& keys, uint64_t seed, int window)
      : d(load_deck("", with_keys(keys))), shape(model_shape(d)), params(init_params(shape, make_layout(shape), seed)),
        fm(*k, shape, Precision::fp32, params, 4, window) {}
  static std::vector<std::string> with_keys(const std::vector<std::string>& keys) {
    std::vector<std::string> ov = one_path_deck();
    ov.insert(ov.end(), keys.begin(), keys.end());
    return ov;
  }
};

}  // namespace

TEST(Routing, ShardFileRoundTrip) {
  const Split& s = corpus();
  std::vector<float> f(s.train.size() * 4);
  for (size_t i = 0; i < f.size(); ++i) f[i] = float((i * 7919) % 13) - 6.0f;
  ShardFile out;
  out.stamp = "route.method = kmeans\n";
  out.round = 2;
  out.has_router = true;
  out.router = fit_router(f, 4, {2, 2}, Routing::product, 5, 50);
  std::vector<double> scores(s.train.size() * 4);
  for (size_t i = 0; i < s.train.size(); ++i) out.router.path_scores(&f[i * 4], &scores[i * 4]);
  out.train = by_path(assign_paths(scores, s.train.size(), 4, 0.5, 2), 4);
  out.val = assign_by_rule(s.val, 4, RouteMethod::hash);
  const std::string file = shared_tmpdir("shards") + "/shards.h5";
  if (world_rank() == 0) write_shard_file(file, out, s);
  MPI_Barrier(MPI_COMM_WORLD);
  ShardFile in = read_shard_file(file, s);
  EXPECT_EQ(in.stamp, out.stamp);
  EXPECT_EQ(in.round, 2);
  EXPECT_EQ(in.train, out.train);
  EXPECT_EQ(in.val, out.val);
  ASSERT_TRUE(in.has_router);
  EXPECT_EQ(in.router.mode, "product");
  EXPECT_EQ(in.router.modules_per_level, (std::vector<int>{2, 2}));
  EXPECT_EQ(in.router.centroids, out.router.centroids);
  EXPECT_EQ(latest_shard_file(file.substr(0, file.rfind('/'))), file);
  // A rank reads only its own paths' training lists, and every path's size:
  // the same sizes as summed from the whole lists (keep_held).
  ShardFile whole = out;
  keep_held(whole, s.train, {1, 2});
  const std::vector<int> held{world_rank() % 4};
  ShardFile mine = read_shard_file(file, s, &held);
  for (int p = 0; p < 4; ++p) {
    EXPECT_EQ(mine.train[p], p == held[0] ? out.train[p] : std::vector<int>{}) << "path " << p;
    EXPECT_EQ(whole.train[p], p == 1 || p == 2 ? out.train[p] : std::vector<int>{}) << "path " << p;
    EXPECT_EQ(mine.train_docs[p], long(out.train[p].size()));
    EXPECT_EQ(whole.train_docs[p], long(out.train[p].size()));
    double bytes = 0;
    for (uint64_t t : s.train.subset(out.train[p]).tokens()) bytes += double(t + 1);
    EXPECT_EQ(mine.train_bytes[p], bytes);
    EXPECT_EQ(whole.train_bytes[p], bytes);
  }
  EXPECT_EQ(mine.val, out.val);  // every path's validation lists (the routed evaluation)
  // A logistic router round-trips too.
  out.router = refit_router_logistic(f, 4, std::vector<int>(s.train.size(), 1), 4, 5);
  const std::string file2 = file.substr(0, file.rfind('/')) + "/shards-r1.h5";
  MPI_Barrier(MPI_COMM_WORLD);  // every rank has looked for the newest file before a newer one appears
  if (world_rank() == 0) write_shard_file(file2, out, s);
  MPI_Barrier(MPI_COMM_WORLD);
  ShardFile in2 = read_shard_file(file2, s);
  EXPECT_EQ(in2.router.mode, "logistic");
  EXPECT_EQ(in2.router.centroids, out.router.centroids);
  EXPECT_EQ(latest_shard_file(file.substr(0, file.rfind('/'))), file2);
  // So does a residual router (every level's centroids as wide as the features).
  out.router = fit_router(f, 4, {2, 2}, Routing::residual, 5, 50);
  const std::string file3 = file.substr(0, file.rfind('/')) + "/shards-r2.h5";
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) write_shard_file(file3, out, s);
  MPI_Barrier(MPI_COMM_WORLD);
  ShardFile in3 = read_shard_file(file3, s);
  EXPECT_EQ(in3.router.mode, "residual");
  EXPECT_EQ(in3.router.centroids, out.router.centroids);
  for (size_t i = 0; i < s.train.size(); i += 17) EXPECT_EQ(in3.router.nearest_path(&f[i * 4]), out.router.nearest_path(&f[i * 4]));
  // A split that does not match the file is refused with the field named.
  Split fewer = s;
  fewer.train = fewer.train.slice(0, 3);
  try {
    read_shard_file(file, fewer);
    ADD_FAILURE() << "accepted indices past the end";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("doc_index"), std::string::npos) << e.what();
  }
}

TEST(Routing, FeaturesDoNotDependOnTheRankCount) {
  Deck d = load_deck("", one_path_deck());
  auto k = make_cpu_kernels();
  const ModelShape shape = model_shape(d);
  const auto params = init_params(shape, make_layout(shape), 11);
  const std::vector<Document> val(corpus().val.begin(), corpus().val.end());
  std::vector<FeatureWindow> w;
  for (const auto& doc : val) w.push_back({&doc, 0}), w.push_back({&doc, 40});
  FeatureModel fm(*k, shape, Precision::fp32, params, 4, 8);
  auto all = fm.features(w, MPI_COMM_WORLD);
  auto alone = fm.features(w, MPI_COMM_SELF);
  ASSERT_EQ(all.size(), w.size() * 32);
  EXPECT_EQ(all, alone);
}

// The features run a model cut to the prefix (causal: the first positions'
// states do not depend on later ones); they are the whole-context model's
// states pooled over the prefix, up to rounding.
TEST(Routing, FeaturesNeedOnlyThePrefix) {
  Deck d = load_deck("", one_path_deck());
  auto k = make_cpu_kernels();
  const ModelShape shape = model_shape(d);
  const auto params = init_params(shape, make_layout(shape), 12);
  const std::vector<Document> val(corpus().val.begin(), corpus().val.end());
  const int prefix = 8;
  ASSERT_LT(prefix, shape.T);
  std::vector<FeatureWindow> w;
  for (size_t i = 0; i < 6; ++i) w.push_back({&val[i], 0}), w.push_back({&val[i], 17});
  FeatureModel fm(*k, shape, Precision::fp32, params, 4, prefix);
  const std::vector<float> got = fm.local_features(w);
  Model full(*k, shape, 1, Precision::fp32);
  std::vector<int32_t> tok(size_t(shape.T));
  for (size_t i = 0; i < w.size(); ++i) {
    read_document(*w[i].doc, w[i].begin, tok.size(), tok.data());
    full.forward(params.data(), tok.data(), tok.data());
    for (int c = 0; c < shape.C; ++c) {
      double want = 0;
      for (int t = 0; t < prefix; ++t) want += full.hidden()[size_t(t) * shape.C + c] / prefix;
      ASSERT_NEAR(got[i * shape.C + c], want, 1e-4) << "window " << i << " channel " << c;
    }
  }
}

TEST(Routing, OnePathRoutedEvalIsThePlainLossAfterThePrefix) {
  Deck d = load_deck("", one_path_deck());
  auto k = make_cpu_kernels();
  const Split& s = corpus();
  Trainer t(d, MPI_COMM_WORLD, *k, shard_by_rule(s.train, 1, RouteMethod::hash), shard_by_rule(s.val, 1, RouteMethod::hash), "", false);
  t.run();
  const ModelShape shape = model_shape(d);
  std::vector<float> params(t.layout().total);
  k->to_host(params.data(), t.paths()[0].params.get(), params.size() * sizeof(float));
  FeatureModel fm(*k, shape, Precision::fp32, params, 4, d.route.prefix_tokens);
  RoutedEval r = routed_evaluate(t, s.val, std::vector<int>(s.val.size(), 0), nullptr, fm, d);

  // Reference: one window per document from its start, scored after the prefix.
  const int T = shape.T;
  Model m(*k, shape, 1, Precision::fp32);
  DeviceBuffer<float> dp(*k, params.size());
  DeviceBuffer<int32_t> tok(*k, T), tgt(*k, T);
  k->to_device(dp.get(), params.data(), params.size() * sizeof(float));
  double loss = 0, bytes = 0;
  std::vector<int32_t> ht(T), hg(T);
  std::vector<float> l(T);
  for (const auto& doc : s.val) {
    auto byte = [&](size_t j) { return j < doc.text.size() ? int32_t(uint8_t(doc.text[j])) : 0; };  // text in memory
    for (int j = 0; j < T; ++j) ht[j] = byte(j), hg[j] = byte(j + 1);
    k->to_device(tok.get(), ht.data(), T * sizeof(int32_t));
    k->to_device(tgt.get(), hg.data(), T * sizeof(int32_t));
    m.forward(dp.get(), tok.get(), tgt.get());
    k->to_host(l.data(), m.token_losses(), T * sizeof(float));
    const size_t end = std::min<size_t>(doc.text.size() + 1, 64);
    for (size_t pos = 8; pos < end; ++pos) loss += l[pos - 1], bytes += 1;
  }
  EXPECT_EQ(r.bytes, bytes);
  EXPECT_NEAR(r.bpb, loss / bytes / std::log(2.0), 1e-6);
  EXPECT_NEAR(r.path_bpb[0], r.bpb, 1e-12);
  double by_domain = 0, domain_bytes = 0;
  for (size_t i = 0; i < r.domains.size(); ++i) by_domain += r.domain_bpb[i] * r.domain_bytes[i], domain_bytes += r.domain_bytes[i];
  EXPECT_EQ(domain_bytes, bytes);
  EXPECT_NEAR(by_domain / domain_bytes, r.bpb, 1e-9);
}

// Re-routing only chooses the path: with one path, re-routing every 20 bytes
// scores every target with the same context as routing once, to the bit.
TEST(Routing, OnePathReroutedScoresExactlyAsRoutedOnce) {
  auto ov = one_path_deck();
  ov.insert(ov.end(), {"model.context=32", "eval.doc_bytes=300"});
  Deck once = load_deck("", ov);
  ov.push_back("eval.reroute_every=20");
  Deck rerouted = load_deck("", ov);
  auto k = make_cpu_kernels();
  const Split& s = corpus();
  Trainer t(once, MPI_COMM_WORLD, *k, shard_by_rule(s.train, 1, RouteMethod::hash), shard_by_rule(s.val, 1, RouteMethod::hash), "", false);
  t.run();
  std::vector<float> params(t.layout().total);
  k->to_host(params.data(), t.paths()[0].params.get(), params.size() * sizeof(float));
  FeatureModel fm(*k, model_shape(once), Precision::fp32, params, 4, once.route.prefix_tokens);
  Router one;  // a router with one path: every re-routing decision picks path 0
  one.mode = "flat", one.dim = fm.dim(), one.modules_per_level = {1};
  one.centroids = {std::vector<float>(size_t(fm.dim()), 0.0f)};
  const std::vector<int> doc_path(s.val.size(), 0);
  RoutedEval a = routed_evaluate(t, s.val, doc_path, &one, fm, once);
  RoutedEval b = routed_evaluate(t, s.val, doc_path, &one, fm, rerouted);
  EXPECT_GT(b.segments, a.segments);  // re-routing did cut the documents
  EXPECT_EQ(a.bytes, b.bytes);
  EXPECT_EQ(a.bpb, b.bpb);
  EXPECT_EQ(a.domain_bpb, b.domain_bpb);
  // Re-routed by the 30 tokens before each segment (the one at 28 keeps its path): the same again.
  ov.insert(ov.end(), {"eval.reroute_window=30", "eval.reroute_router=windows"});
  const Deck window30 = load_deck("", ov);
  FeatureModel fm30(*k, model_shape(window30), Precision::fp32, params, 4, 30);
  RoutedEval c = routed_evaluate(t, s.val, doc_path, &one, fm30, window30);
  EXPECT_EQ(c.segments, b.segments);
  EXPECT_EQ(c.bytes, a.bytes);
  EXPECT_EQ(c.bpb, a.bpb);
}

// A segment is re-routed by the window just before it, never by text after its
// start: with a router of two paths, the segments whose window is too short
// for eval.reroute_window keep the path before them, the others take the
// nearest path of the window [s - window, s).
TEST(Routing, ReroutingReadsOnlyTheWindowBeforeEachSegment) {
  DeckFeatures x({"eval.doc_bytes=300", "eval.reroute_every=20", "eval.reroute_window=40",
                  "eval.reroute_router=windows", "dipaco.modules_per_level=2"},
                 5, 40);
  const Deck& d = x.d;
  FeatureModel& fm = x.fm;
  const Split& s = corpus();
  size_t pick = 0;
  while (pick < s.val.size() && s.val[pick].tokens() < 300) ++pick;
  ASSERT_LT(pick, s.val.size()) << "a validation document of 300 bytes";
  const DocList one = s.val.slice(pick, pick + 1);
  const Document doc = one[0];
  // Path 1's centroid is the feature of [8, 48), path 0's that plus 1000 in every
  // component: every window that is read goes to path 1.
  const std::vector<float> f = fm.local_features({{&doc, 8}});
  Router r;
  r.mode = "flat", r.dim = fm.dim(), r.modules_per_level = {2};
  r.centroids = {std::vector<float>(size_t(2 * fm.dim()))};
  for (int c = 0; c < fm.dim(); ++c) r.centroids[0][size_t(c)] = f[size_t(c)] + 1e3f, r.centroids[0][size_t(fm.dim() + c)] = f[size_t(c)];
  Trainer t(d, MPI_COMM_WORLD, *x.k, shard_by_rule(s.train, 2, RouteMethod::hash), shard_by_rule(s.val, 2, RouteMethod::hash), "", false);
  const RoutedEval got = routed_evaluate(t, one, {0}, &r, fm, d);
  // Segments [8, 28) and [28, 48) on path 0 (the document's; no 40 tokens before 28), the 13 after on path 1.
  EXPECT_EQ(got.segments, 15);
  EXPECT_EQ(got.path_bytes[0], 40.0);
  EXPECT_EQ(got.path_bytes[1], 300.0 - 48.0);
  // With a stay past path 0's distance, every segment stays on the document's path 0;
  // one just short of it moves them all as before.
  std::vector<double> score(2);
  r.path_scores(f.data(), score.data());
  r.stay = 1.01 * (score[0] - score[1]);
  const RoutedEval home = routed_evaluate(t, one, {0}, &r, fm, d);
  EXPECT_EQ(home.segments, 15);
  EXPECT_EQ(home.path_bytes[0], 300.0 - 8.0);  // every byte after the prefix
  EXPECT_EQ(home.path_bytes[1], 0.0);
  r.stay = 0.01 * (score[0] - score[1]);
  EXPECT_EQ(routed_evaluate(t, one, {0}, &r, fm, d).path_bytes[1], 300.0 - 48.0);
}

// The re-routing router: path p's centroid is the mean feature of the windows
// re-routing reads ([s - prefix, s) for s = prefix + k * every, k >= 1) in
// kWindowRouterDocs of p's training documents spread evenly over its shard (a
// shard lists its documents by domain); a path without documents gets the mean of all.
// Each path's first rank reads its windows: the same router at any rank count.
TEST(Routing, WindowRouterCentroidsAreTheWindowsMeans) {
  for (const int window : {8, 30}) {  // route.prefix_tokens, and eval.reroute_window = 30 (the segment at 28 has none)
  DeckFeatures x({"eval.doc_bytes=300", "eval.reroute_every=20", "eval.reroute_window=" + std::to_string(window)}, 11, window);
  const Deck& d = x.d;
  FeatureModel& fm = x.fm;
  const Split& s = corpus();
  const Topology topo = make_topology({2, 2}, world_size());
  Assignment train(4);  // path 0 holds more documents than are read, path 3 none
  for (size_t i = 0; i < s.train.size(); ++i) {
    train[0].push_back(int(i));
    if (i % 2) train[1].push_back(int(i));
    if (i % 3 == 0) train[2].push_back(int(i));
  }
  ASSERT_GT(train[0].size(), kWindowRouterDocs);
  const Router r = reroute_router(train, s.train, topo, world_rank(), fm, d, MPI_COMM_WORLD);
  ASSERT_EQ(r.mode, "flat");
  ASSERT_EQ(r.paths(), 4);
  std::vector<double> all(size_t(fm.dim()), 0.0);
  double windows = 0;
  for (int p = 0; p < 4; ++p) {
    const size_t n = std::min(train[p].size(), kWindowRouterDocs);
    std::vector<Document> docs;
    for (size_t j = 0; j < n; ++j) docs.push_back(s.train[size_t(train[p][(2 * j + 1) * train[p].size() / (2 * n)])]);
    std::vector<FeatureWindow> w;
    for (const Document& doc : docs) {
      const size_t end = std::min(doc.tokens() + 1, size_t(300));
      for (size_t at = 8 + 20; at < end; at += 20)
        if (at >= size_t(window)) w.push_back({&doc, at - size_t(window)});
    }
    if (p < 3) ASSERT_GT(w.size(), n) << "documents longer than one segment";
    const std::vector<float> f = fm.local_features(w);
    for (int c = 0; c < fm.dim(); ++c) {
      double mean = 0;
      for (size_t i = 0; i < w.size(); ++i) mean += f[i * fm.dim() + c];
      all[c] += mean;
      if (p < 3) EXPECT_NEAR(r.centroids[0][size_t(p) * fm.dim() + c], mean / double(w.size()), 1e-5) << p << " " << c;
    }
    windows += double(w.size());
  }
  for (int c = 0; c < fm.dim(); ++c)
    EXPECT_NEAR(r.centroids[0][size_t(3) * fm.dim() + c], all[c] / windows, 1e-5) << "the empty path: the mean of all";
  }
}

// Balanced (segment shards): the windows come from a path's whole shard,
// kWindowsPerPath of them spread evenly over all its re-routed windows in
// order (a document in proportion to its windows); p's centroid is their mean.
TEST(Routing, BalancedWindowRouterReadsWholeShards) {
  DeckFeatures x({"eval.doc_bytes=40", "route.method=kmeans", "route.segment_tokens=20", "route.segment_window=30"}, 17, 30);
  const Deck& d = x.d;
  FeatureModel& fm = x.fm;
  const Split& s = corpus();
  const Topology topo = make_topology({2, 2}, world_size());
  Assignment train(4);  // path 0: every document; 1-3 a quarter each
  for (size_t i = 0; i < s.train.size(); ++i) train[0].push_back(int(i)), train[1 + i % 3].push_back(int(i));
  const Router r = window_router(train, s.train, topo, world_rank(), fm, d, 20, 30, 0, true, MPI_COMM_WORLD);
  bool sampled = false;  // some path has more windows than are read
  for (int p = 0; p < 4; ++p) {
    std::vector<Document> docs;
    for (int i : train[size_t(p)]) docs.push_back(s.train[size_t(i)]);
    std::vector<FeatureWindow> all;
    for (const Document& doc : docs)
      for (size_t from = 48; from < doc.tokens() + 1; from += 20) all.push_back({&doc, from - 30});  // from 8, by 20, past 30
    const size_t n = std::min(all.size(), kWindowsPerPath);
    ASSERT_GT(n, 0u);
    sampled |= all.size() > n;
    std::vector<FeatureWindow> w;
    for (size_t j = 0; j < n; ++j) w.push_back(all[(2 * j + 1) * all.size() / (2 * n)]);
    const std::vector<float> f = fm.local_features(w);
    for (int c = 0; c < fm.dim(); ++c) {
      double sum = 0;
      for (size_t i = 0; i < w.size(); ++i) sum += f[i * fm.dim() + c];
      EXPECT_NEAR(r.centroids[0][size_t(p) * fm.dim() + c], sum / double(n), 1e-5) << p << " " << c;
    }
  }
  EXPECT_TRUE(sampled) << "a shard of more than kWindowsPerPath windows";
  ASSERT_EQ(r.offsets.size(), 4u) << "balanced";
}

// Segment shards: every training document cut every 20 tokens after its prefix
// of 8, to its end; the segments before the first with 30 tokens before it
// train the document's path, each later one the path the windows router picks
// for the 30 tokens before it, as the window of T + 1 tokens that ends with it.
// Checked against a serial reference on every rank's paths, at any rank count.
namespace {
// Segment shards cut with route.segment_margin = `margin` against a reference
// cut here, one document at a time; `stayed`: the share of the re-routed
// segments that stayed on their document's path.
void check_segment_shards(const std::string& margin, double& stayed_share) {
  DeckFeatures x({"route.method=kmeans", "route.segment_tokens=20", "route.segment_window=30",
                  "route.segment_margin=" + margin},
                 13, 30);
  const Deck& d = x.d;
  FeatureModel& fm = x.fm;
  const DocList docs = corpus().train.slice(0, 48);
  const Topology topo = make_topology({2, 2}, world_size());
  Assignment all(4);  // by the document's index; the rank's own paths only, as a shard file is read
  for (size_t i = 0; i < docs.size(); ++i) all[i % 4].push_back(int(i));
  Assignment held(4);
  for (int p : topo.paths_of_rank(world_rank())) held[size_t(p)] = all[size_t(p)];
  const Router r = window_router(held, docs, topo, world_rank(), fm, d, 20, 30, d.route.segment_margin, true, MPI_COMM_WORLD);
  EXPECT_EQ(r.stay, d.route.segment_margin * r.centroid_spacing());
  const SegmentShards got = segment_shards(held, docs, r, topo, world_rank(), fm, d, MPI_COMM_WORLD);

  // The reference: every document, here; the windows' features in one call.
  const int T = d.model.context;
  const std::vector<Document> views = docs.documents(0, docs.size());
  struct Want {
    size_t doc, from, to;
  };
  std::vector<Want> segs;
  std::vector<FeatureWindow> windows;
  double total = 0;
  for (size_t i = 0; i < views.size(); ++i) {
    const size_t end = views[i].tokens() + 1;
    total += double(end);
    if (end <= 8) segs.push_back({i, 0, end});
    for (size_t from = 8; from < end; from += 20) {
      segs.push_back({i, from, std::min(end, from + 20)});
      if (from > 8 && from >= 30) windows.push_back({&views[i], from - 30});
    }
  }
  const std::vector<float> f = fm.local_features(windows);
  std::vector<std::set<std::pair<std::string, uint32_t>>> want(4);
  std::vector<double> bytes(4, 0.0);
  long moved = 0, stayed = 0;
  for (const Want& w : segs) {
    int p = int(w.doc % 4);
    if (w.from > 8 && w.from >= 30) {
      p = r.rerouted_path(&f[size_t(moved++) * size_t(fm.dim())], p);
      stayed += p == int(w.doc % 4);
    }
    want[size_t(p)].insert({std::string(views[w.doc].id), uint32_t(w.to > size_t(T) + 1 ? w.to - size_t(T) - 1 : 0)});
    bytes[size_t(p)] += double(w.to - (w.from <= 8 ? 0 : w.from));
  }
  ASSERT_EQ(got.bytes.size(), 4u);
  double sum = 0;
  for (int p = 0; p < 4; ++p) {
    EXPECT_EQ(got.bytes[size_t(p)], bytes[size_t(p)]) << p;
    sum += got.bytes[size_t(p)];
  }
  EXPECT_EQ(sum, total) << "the segments add up to the documents";
  // Balanced on windows from whole documents: each path's segments add up to
  // about its documents' tokens (the router fit on the first eval.doc_bytes
  // gave one path 35% of them, another 159%).
  for (int p = 0; p < 4; ++p) {
    double own = 0;
    for (int i : all[size_t(p)]) own += double(views[size_t(i)].tokens() + 1);
    EXPECT_NEAR(got.bytes[size_t(p)], own, 0.15 * own) << "path " << p;
  }
  EXPECT_EQ(got.rerouted, moved);
  EXPECT_EQ(got.segments, long(segs.size()));
  const std::vector<int> mine = topo.paths_of_rank(world_rank());
  ASSERT_EQ(got.held.size(), mine.size());
  int paths_gaining = 0;
  for (size_t h = 0; h < mine.size(); ++h) {
    std::set<std::pair<std::string, uint32_t>> have;
    const TokenStream stream = segment_stream(got.held[h], docs);
    const std::vector<WindowStart>& w = stream.windows();
    EXPECT_TRUE(std::is_sorted(w.begin(), w.end()));
    for (const WindowStart& x : w) have.insert({std::string(stream.document(x.doc).id), x.start});
    EXPECT_EQ(have.size(), w.size()) << "no window twice";
    EXPECT_EQ(have, want[size_t(mine[h])]) << "path " << mine[h];
    paths_gaining += have.size() > all[size_t(mine[h])].size();
  }
  EXPECT_GT(paths_gaining, 0) << "documents longer than their first segments";

  // Kept for the next start: read back whole under its stamp only.
  const std::string file = shared_tmpdir("segments") + "/segments.h5";
  SegmentShards kept = got;
  kept.router = r;
  EXPECT_EQ(save_segment_shards(file, "stamp A\n", kept, topo, world_rank(), MPI_COMM_WORLD), "");
  SegmentShards back;
  EXPECT_FALSE(load_segment_shards(file, "stamp B\n", docs.size(), topo, world_rank(), MPI_COMM_WORLD, back));
  EXPECT_FALSE(load_segment_shards(file, "stamp A\n", 10, topo, world_rank(), MPI_COMM_WORLD, back))
      << "windows of documents the corpus lacks";
  ASSERT_TRUE(load_segment_shards(file, "stamp A\n", docs.size(), topo, world_rank(), MPI_COMM_WORLD, back));
  EXPECT_EQ(back.held, got.held);
  EXPECT_EQ(back.bytes, got.bytes);
  EXPECT_EQ(back.segments, got.segments);
  EXPECT_EQ(back.rerouted, got.rerouted);
  EXPECT_EQ(back.router.centroids, r.centroids);
  EXPECT_EQ(back.router.offsets, r.offsets);
  ASSERT_FALSE(r.offsets.empty()) << "a balanced router";
  EXPECT_FALSE(load_segment_shards(file + ".missing", "stamp A\n", docs.size(), topo, world_rank(), MPI_COMM_WORLD, back));
  // The router alone (a finished run's evaluation): under its stamp only, on every rank alike.
  Router alone;
  EXPECT_FALSE(read_segment_router(file, "stamp B\n", topo.paths, MPI_COMM_WORLD, alone));
  EXPECT_FALSE(read_segment_router(file + ".missing", "stamp A\n", topo.paths, MPI_COMM_WORLD, alone));
  ASSERT_TRUE(read_segment_router(file, "stamp A\n", topo.paths, MPI_COMM_WORLD, alone));
  EXPECT_EQ(alone.centroids, r.centroids);
  EXPECT_EQ(alone.offsets, r.offsets);
  EXPECT_EQ(alone.stay, r.stay);
  EXPECT_EQ(read_segment_router(file, topo.paths).offsets, r.offsets);
  stayed_share = double(stayed) / double(moved);
}
}  // namespace

TEST(Routing, SegmentShardsTrainEachSegmentOnThePathItsWindowPicks) {
  double stayed = 0;
  check_segment_shards("0", stayed);
}

// route.segment_margin: a segment leaves its document's path only for a path
// nearer by the margin; the balance still gives each path about its documents'
// tokens. A margin past every distance keeps whole documents.
TEST(Routing, SegmentMarginKeepsSegmentsOnTheirDocumentsPath) {
  double none = 0, some = 0, all = 0;
  check_segment_shards("0", none);
  check_segment_shards("0.5", some);
  check_segment_shards("1e6", all);
  EXPECT_LT(none, some);
  EXPECT_LT(some, 1.0);
  EXPECT_EQ(all, 1.0);
}

// Balancing the windows router: the nearest centroid gives path 0 five windows
// in eight; offsets bring both paths to the half their documents brought, the
// same offsets on every rank whatever the rank count; a path that brought no
// window takes none.
TEST(Routing, BalancedRouterTakesTheSharesThePathsBrought) {
  Router r;
  r.mode = "flat", r.dim = 1, r.modules_per_level = {3};
  r.centroids = {{0.0f, 1.0f, 5.0f}};
  std::vector<float> all, mine;
  for (int i = 0; i < 1000; ++i) all.push_back(0.8f * (float(i) + 0.5f) / 1000.0f);
  for (size_t i = size_t(world_rank()); i < all.size(); i += size_t(world_size())) mine.push_back(all[i]);
  auto count = [&](int p) {
    int n = 0;
    for (float x : all) n += r.nearest_path(&x) == p;
    return n;
  };
  ASSERT_EQ(count(0), 625) << "unbalanced: the nearest centroid";
  const double off = balance_router(r, mine, {}, {500, 500, 0}, MPI_COMM_WORLD).off;
  EXPECT_LT(off, 0.05);
  EXPECT_NEAR(count(0), 500, 25);
  EXPECT_NEAR(count(1), 500, 25);
  EXPECT_EQ(count(2), 0);
  std::vector<double> lo = r.offsets, hi = r.offsets;
  MPI_Allreduce(MPI_IN_PLACE, lo.data(), 3, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, hi.data(), 3, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  EXPECT_EQ(lo, hi) << "every rank's offsets the same";
}

// Sixteen paths on a grid, most windows crowding one corner, each with a
// weight, and shares from 1 to 16: every path within 5% of its share (the
// weighted windows counted), the same offsets on every rank at any rank count.
TEST(Routing, BalancedRouterReachesSkewedSharesOfManyPaths) {
  constexpr int P = 16;
  Router r;
  r.mode = "flat", r.dim = 2, r.modules_per_level = {P};
  r.centroids.assign(1, {});
  for (int p = 0; p < P; ++p) r.centroids[0].insert(r.centroids[0].end(), {float(p % 4), float(p / 4)});
  std::vector<float> all;
  std::vector<double> all_weight;
  uint64_t x = 12345;
  auto uniform = [&] { return double((x = x * 6364136223846793005ULL + 1442695040888963407ULL) >> 11) / double(1ULL << 53); };
  for (int i = 0; i < 8000; ++i) {
    const double spread = i % 4 ? 0.8 : 4.0;  // three in four near the corner (0, 0)
    all.push_back(float(-0.5 + spread * uniform()));
    all.push_back(float(-0.5 + spread * uniform()));
    all_weight.push_back(1.0 + i % 3);
  }
  std::vector<float> mine;
  std::vector<double> weight;
  for (size_t i = size_t(world_rank()); i < all_weight.size(); i += size_t(world_size())) {
    mine.insert(mine.end(), {all[2 * i], all[2 * i + 1]});
    weight.push_back(all_weight[i]);
  }
  std::vector<double> target(P);
  double total_target = 0, total_weight = 0;
  for (int p = 0; p < P; ++p) total_target += target[size_t(p)] = p + 1;
  for (double w : all_weight) total_weight += w;
  auto shares = [&] {
    std::vector<double> got(P, 0.0);
    for (size_t i = 0; i < all_weight.size(); ++i) got[size_t(r.nearest_path(&all[2 * i]))] += all_weight[i];
    return got;
  };
  ASSERT_GT(shares()[0], 0.3 * total_weight) << "unbalanced: the corner's path takes most";
  const double off = balance_router(r, mine, weight, target, MPI_COMM_WORLD).off;
  EXPECT_LT(off, 0.05);
  const std::vector<double> got = shares();
  for (int p = 0; p < P; ++p) {
    const double want = target[size_t(p)] / total_target * total_weight;
    EXPECT_NEAR(got[size_t(p)], want, 0.05 * want) << "path " << p;
  }
  std::vector<double> lo = r.offsets, hi = r.offsets;
  MPI_Allreduce(MPI_IN_PLACE, lo.data(), P, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, hi.data(), P, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  EXPECT_EQ(lo, hi) << "every rank's offsets the same";
  Router alone = r;  // every window on one rank: the offsets of np 1
  balance_router(alone, all, all_weight, target, MPI_COMM_SELF);
  EXPECT_EQ(alone.offsets, r.offsets) << "the same offsets at any rank count";
  Router bounded = r;  // the scores of 100 windows held, the rest computed again at each pass
  balance_router(bounded, mine, weight, target, MPI_COMM_WORLD, {}, 100 * P * sizeof(double));
  EXPECT_EQ(bounded.offsets, r.offsets) << "the same offsets whatever share of the scores is held";

  // With a margin: window i's own path is i % P, where it stays unless another
  // path is nearer by more than the stay. The balance counts the rule: the
  // shares are still within 5%, and more windows stay home than without it.
  std::vector<int> all_own, own;
  for (size_t i = 0; i < all_weight.size(); ++i) all_own.push_back(int(i % P));
  for (size_t i = size_t(world_rank()); i < all_weight.size(); i += size_t(world_size())) own.push_back(all_own[i]);
  auto home = [&](const Router& q) {
    double w = 0;
    for (size_t i = 0; i < all_weight.size(); ++i) w += q.rerouted_path(&all[2 * i], all_own[i]) == all_own[i] ? all_weight[i] : 0;
    return w / total_weight;
  };
  const double home_without = home(r);
  Router kept = r;
  kept.stay = 0.5 * kept.centroid_spacing();
  const Balance b = balance_router(kept, mine, weight, target, MPI_COMM_WORLD, own);
  EXPECT_LT(b.off, 0.05);
  Router unheld = kept;  // no score held: the stay applied as each is computed
  const Balance c = balance_router(unheld, mine, weight, target, MPI_COMM_WORLD, own, 0);
  EXPECT_EQ(unheld.offsets, kept.offsets);
  EXPECT_EQ(c.kept, b.kept);
  std::vector<double> with(P, 0.0);
  for (size_t i = 0; i < all_weight.size(); ++i) with[size_t(kept.rerouted_path(&all[2 * i], all_own[i]))] += all_weight[i];
  for (int p = 0; p < P; ++p) {
    const double want = target[size_t(p)] / total_target * total_weight;
    EXPECT_NEAR(with[size_t(p)], want, 0.05 * want) << "path " << p << " with a margin";
  }
  EXPECT_NEAR(b.kept, home(kept), 1e-3) << "the share that stays, as the balance counts it";
  EXPECT_GT(home(kept), home_without + 0.05);
}
