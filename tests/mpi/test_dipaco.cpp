// DiPaCo rounds over real MPI ranks. Run at -np 1, 2 and 4: tests that need
// several ranks compare sub-communicators of the world (1, 2 and 4 ranks)
// inside one job.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>

#include "dipaco/io/deck.hpp"
#include "dipaco/train/diloco.hpp"
#include "dipaco/train/exact_sum.hpp"
#include "harness.hpp"

using namespace dipaco;
using namespace testing_mpi;

namespace {

// The first n ranks of the world (MPI_COMM_NULL on the others).
MPI_Comm first_ranks(int n) {
  MPI_Comm c;
  MPI_Comm_split(MPI_COMM_WORLD, world_rank() < n ? 0 : MPI_UNDEFINED, world_rank(), &c);
  return c;
}

// A hand-built outer round on a 2x2 of tiny paths: the deck (the common keys
// plus `extra`), its optimizer and this rank's paths, their weights and anchors 0.
struct HandRound {
  Deck deck;
  Topology topo;
  ParamLayout layout;
  std::unique_ptr<Kernels> k = make_cpu_kernels();
  std::vector<PathState> paths;
  std::vector<PathState*> own;
  std::unique_ptr<OuterOptimizer> outer;
  explicit HandRound(std::vector<std::string> extra) {
    std::vector<std::string> keys = {"model.d_model=8", "model.n_layers=2", "model.n_heads=1", "model.context=4",
                                     "model.layers_per_level=1,1", "dipaco.modules_per_level=2,2"};
    keys.insert(keys.end(), extra.begin(), extra.end());
    deck = load_deck("", keys);
    topo = make_topology(deck.dipaco.modules_per_level, world_size());
    layout = make_layout(model_shape(deck));
    outer = std::make_unique<OuterOptimizer>(deck, topo, layout, *k, MPI_COMM_WORLD);
    for (int p : topo.paths_of_rank(world_rank())) {
      PathState ps;
      ps.id = p;
      ps.params = DeviceBuffer<float>(*k, layout.total);
      paths.push_back(std::move(ps));
    }
    for (auto& p : paths) own.push_back(&p);
    outer->init_anchors(own);
  }
};

const float* group_of(const RunOut& r, int path, int group) {
  return r.params[path].data() + r.layout.groups[group].offset;
}

TEST(DiPaCo, SharedModulesIdenticalAfterRoundPrivateGroupsDiffer) {
  auto d = tiny_deck();
  d.push_back("dipaco.shared=none");
  RunOut r = train_on(MPI_COMM_WORLD, d);
  // Paths 0 (L0:M0, L1:M0) and 1 (L0:M0, L1:M1) share level-0 module 0.
  const size_t n0 = r.layout.groups[1].size, n1 = r.layout.groups[2].size, ne = r.layout.groups[0].size;
  EXPECT_EQ(0, std::memcmp(group_of(r, 0, 1), group_of(r, 1, 1), n0 * 4));
  EXPECT_EQ(0, std::memcmp(group_of(r, 2, 1), group_of(r, 3, 1), n0 * 4));
  EXPECT_EQ(0, std::memcmp(group_of(r, 0, 2), group_of(r, 2, 2), n1 * 4));
  EXPECT_EQ(0, std::memcmp(group_of(r, 1, 2), group_of(r, 3, 2), n1 * 4));
  // Different modules of a level, and private embeddings, differ.
  EXPECT_GT(max_abs_diff(group_of(r, 0, 1), group_of(r, 2, 1), n0), 1e-4);
  EXPECT_GT(max_abs_diff(group_of(r, 0, 0), group_of(r, 1, 0), ne), 1e-4);
  EXPECT_TRUE(std::isfinite(r.summary.final_eval.bpb));
}

TEST(DiPaCo, SharedEmbeddingsIdenticalAcrossAllPaths) {
  RunOut r = train_on(MPI_COMM_WORLD, tiny_deck());
  for (int p = 1; p < 4; ++p) EXPECT_EQ(0, std::memcmp(group_of(r, 0, 0), group_of(r, p, 0), r.layout.groups[0].size * 4));
}

// The same deck on 1, 2 and 4 ranks gives bitwise the same weights: the outer
// gradients are summed exactly (ExactSum), whatever the placement of paths.
TEST(DiPaCo, SameWeightsWhateverTheRankCount) {
  // Rank 0 belongs to every sub-communicator, so it holds every result.
  std::vector<RunOut> runs;
  for (int n : {1, 2, 4}) {
    if (n > world_size()) break;
    MPI_Comm c = first_ranks(n);
    RunOut r;
    if (c != MPI_COMM_NULL) r = train_on(c, tiny_deck()), MPI_Comm_free(&c);
    runs.push_back(std::move(r));
  }
  if (world_rank() != 0 || runs.size() < 2) return;
  for (size_t i = 1; i < runs.size(); ++i)
    for (int p = 0; p < 4; ++p)
      EXPECT_EQ(0, std::memcmp(runs[0].params[p].data(), runs[i].params[p].data(), runs[0].layout.total * 4))
          << "path " << p << " differs between 1 and " << (1 << i) << " ranks";
}

// One path, H = 1, outer lr 1, momentum 0: the outer step hands back the
// inner weights, so DiLoCo reduces to plain training.
TEST(DiPaCo, IdentityOuterStepReproducesPlainTraining) {
  std::vector<std::string> base = {"model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.context=32",
                                   "train.batch_size=4", "train.steps=5", "eval.every=0", "eval.batches=1",
                                   "run.threads=1", "run.log_every=1000"};
  auto diloco = base;
  diloco.insert(diloco.end(), {"dipaco.inner_steps=1", "dipaco.outer_lr=1", "dipaco.outer_momentum=0"});
  RunOut plain = train_on(MPI_COMM_WORLD, base), outer = train_on(MPI_COMM_WORLD, diloco);
  EXPECT_LT(max_abs_diff(plain.params[0].data(), outer.params[0].data(), plain.layout.total), 1e-6);
  EXPECT_EQ(outer.summary.rounds, 5);
}

// The outer lr warm-up: round r uses outer_lr * min(1, (r + 1) / W). One path,
// H = 1, momentum 0: with W = 4 the first round is the round of outer lr 0.25;
// over two rounds W = 2 is not outer lr 0.5 throughout (its second round has the full rate).
TEST(DiPaCo, OuterWarmupRampsTheOuterLr) {
  Deck deck = load_deck("", {"dipaco.outer_lr=0.8", "dipaco.outer_warmup=4"});
  EXPECT_DOUBLE_EQ(OuterOptimizer::outer_lr_at(deck, 0), 0.2);
  EXPECT_DOUBLE_EQ(OuterOptimizer::outer_lr_at(deck, 2), 0.6);
  EXPECT_DOUBLE_EQ(OuterOptimizer::outer_lr_at(deck, 3), 0.8);
  EXPECT_DOUBLE_EQ(OuterOptimizer::outer_lr_at(deck, 40), 0.8);
  std::vector<std::string> base = {"model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.context=32",
                                   "train.batch_size=4", "eval.every=0", "eval.batches=1", "run.threads=1",
                                   "run.log_every=1000", "dipaco.inner_steps=1", "dipaco.outer_momentum=0"};
  auto with = [&](std::vector<std::string> extra) {
    auto d = base;
    d.insert(d.end(), extra.begin(), extra.end());
    return train_on(MPI_COMM_WORLD, d);
  };
  RunOut warm = with({"train.steps=1", "dipaco.outer_lr=1", "dipaco.outer_warmup=4"});
  RunOut quarter = with({"train.steps=1", "dipaco.outer_lr=0.25"});
  EXPECT_EQ(0, std::memcmp(warm.params[0].data(), quarter.params[0].data(), warm.layout.total * 4));
  RunOut warm2 = with({"train.steps=2", "dipaco.outer_lr=1", "dipaco.outer_warmup=2"});
  RunOut half2 = with({"train.steps=2", "dipaco.outer_lr=0.5"});
  EXPECT_GT(max_abs_diff(warm2.params[0].data(), half2.params[0].data(), warm2.layout.total), 1e-6);
}

// Dense data-parallel training: np=1 and np=2 with the same global batch
// agree to 1e-5 in every weight after 5 steps.
TEST(DenseDataParallel, OneAndTwoRanksAgree) {
  std::vector<std::string> d = {"model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.context=32",
                                "train.batch_size=4", "train.steps=5", "eval.every=0", "eval.batches=1",
                                "run.threads=1", "run.log_every=1000"};
  if (world_size() < 2) GTEST_SKIP() << "needs 2 ranks";
  MPI_Comm one = first_ranks(1), two = first_ranks(2);
  RunOut a, b;
  if (one != MPI_COMM_NULL) a = train_on(one, d), MPI_Comm_free(&one);
  if (two != MPI_COMM_NULL) b = train_on(two, d), MPI_Comm_free(&two);
  if (world_rank() == 0) EXPECT_LT(max_abs_diff(a.params[0].data(), b.params[0].data(), a.layout.total), 1e-5);
}

// With fixed micro-batches (train.micro_batch) the gradient sum is exact:
// one, two and four ranks on one path give bitwise the same weights.
TEST(DenseDataParallel, MicroBatchesBitwiseAtAnyRankCount) {
  std::vector<std::string> d = {"model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.context=32",
                                "train.batch_size=4", "train.micro_batch=1", "train.steps=5", "eval.every=0",
                                "eval.batches=1", "run.threads=1", "run.log_every=1000"};
  std::vector<RunOut> runs;
  for (int n : {1, 2, 4}) {
    if (n > world_size()) break;
    MPI_Comm c = first_ranks(n);
    RunOut r;
    if (c != MPI_COMM_NULL) r = train_on(c, d), MPI_Comm_free(&c);
    runs.push_back(std::move(r));
  }
  if (world_rank() != 0) return;
  for (size_t i = 1; i < runs.size(); ++i)
    EXPECT_EQ(0, std::memcmp(runs[0].params[0].data(), runs[i].params[0].data(), runs[0].layout.total * 4))
        << "1 and " << (1 << i) << " ranks differ";
}

// ExactSum: terms dealt to 1, 2 or 4 ranks in any way give bitwise one result,
// within 2^-50 of each block's largest term from the double-precision sum.
TEST(ExactSum, SameBitsWhoeverHoldsTheTerms) {
  const size_t n = 1000;
  const int terms = 7;
  std::vector<std::vector<float>> t(terms, std::vector<float>(n));
  uint64_t s = 42;
  for (auto& v : t)
    for (size_t i = 0; i < n; ++i) {
      s = s * 6364136223846793005ULL + 1442695040888963407ULL;
      v[i] = float(double(s >> 11) / double(1ULL << 53) - 0.5) * std::ldexp(1.0f, int(i % 40) - 20);
    }
  std::vector<double> ref(n, 0.0);
  for (auto& v : t)
    for (size_t i = 0; i < n; ++i) ref[i] += v[i];
  std::vector<std::vector<float>> results;
  for (int ranks : {1, 2, 4}) {
    if (ranks > world_size()) break;
    MPI_Comm c = first_ranks(ranks);
    std::vector<float> out(n);
    if (c != MPI_COMM_NULL) {
      std::vector<const float*> mine;
      for (int k = 0; k < terms; ++k)
        if ((k * 5 + 3) % ranks == world_rank()) mine.push_back(t[k].data());  // an arbitrary dealing
      ExactSum().sum(mine, n, terms, c, out.data());
      MPI_Comm_free(&c);
    }
    results.push_back(out);
  }
  if (world_rank() != 0) return;
  for (size_t i = 0; i < n; ++i) {
    double block_max = 0;  // the largest term of i's block
    for (size_t j = i / ExactSum::kBlock * ExactSum::kBlock; j < std::min(n, (i / ExactSum::kBlock + 1) * ExactSum::kBlock); ++j)
      for (auto& v : t) block_max = std::max(block_max, double(std::fabs(v[j])));
    EXPECT_NEAR(results[0][i], ref[i], std::fabs(ref[i]) * 0x1p-24 + block_max * 0x1p-50) << i;
  }
  for (size_t r = 1; r < results.size(); ++r) EXPECT_EQ(0, std::memcmp(results[0].data(), results[r].data(), n * 4));
}

// A term with NaN or inf: its block of the sum is NaN on every rank and
// counted, the other blocks exact; never a finite value (llrint(NaN) once
// gave LLONG_MIN, and the block scale skipped the NaN).
TEST(ExactSum, NotFiniteTermMakesItsBlockNaN) {
  const size_t n = 3 * ExactSum::kBlock;
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> t(n, 0.25f);
    if (world_rank() == world_size() - 1) t[ExactSum::kBlock + 7] = bad;
    std::vector<float> out(n);
    ExactSum s;
    s.sum({t.data()}, n, world_size(), MPI_COMM_WORLD, out.data());
    EXPECT_EQ(s.nonfinite_blocks(), 1u) << bad;
    for (size_t i = 0; i < n; ++i) {
      if (i / ExactSum::kBlock == 1) ASSERT_TRUE(std::isnan(out[i])) << bad << " i=" << i;
      else ASSERT_EQ(out[i], 0.25f * float(world_size())) << bad << " i=" << i;
    }
  }
}

TEST(DiPaCo, SameDeckTwiceIsBitwiseIdentical) {
  RunOut a = train_on(MPI_COMM_WORLD, tiny_deck()), b = train_on(MPI_COMM_WORLD, tiny_deck());
  for (int p = 0; p < 4; ++p) EXPECT_EQ(0, std::memcmp(a.params[p].data(), b.params[p].data(), a.layout.total * 4));
}

TEST(DiPaCo, TrainsWithDroppedOuterGradients) {
  auto d = tiny_deck();
  d.insert(d.end(), {"fault.drop_outer_prob=0.3", "train.steps=24", "run.seed=5"});
  RunOut r = train_on(MPI_COMM_WORLD, d);
  EXPECT_GT(r.summary.dropped, 0);
  EXPECT_TRUE(std::isfinite(r.summary.final_eval.bpb));
  EXPECT_LT(r.summary.final_eval.bpb, 7.0);  // it learned something from 8 bits
}

// A hand-built outer round: known shard sizes, known weights, one path dropped.
TEST(OuterRound, HandBuiltAnchorsAndDroppedPath) {
  if (world_size() > 4) GTEST_SKIP();
  HandRound h({"dipaco.inner_steps=1", "dipaco.outer_lr=0.5", "dipaco.outer_momentum=0.9", "run.seed=11"});
  auto& [deck, topo, layout, k, paths, own, outer] = h;
  // Every path starts at 0; path p ends the round at weights (p+1) everywhere.
  for (auto* p : own) std::fill(p->params.get(), p->params.get() + layout.total, float(p->id + 1));
  std::vector<double> tokens = {100, 300, 200, 400};
  // Find a round in which exactly path 1 is dropped, with drop probability 0.25.
  deck.fault.drop_outer_prob = 0.25;
  long round = 0;
  auto only_path1 = [&](long r) {
    return outer->dropped(r, 1) && !outer->dropped(r, 0) && !outer->dropped(r, 2) && !outer->dropped(r, 3);
  };
  while (!only_path1(round)) ++round;
  outer->round(round, own, tokens);
  // Module L0.M0 holds paths 0 and 1; path 1 dropped: delta = 1.0*(0 - 1) = -1.
  // Module L1.M1 holds paths 1 and 3; only path 3 present: delta = -4.
  // Module L1.M0 holds paths 0 and 2: delta = -(100*1 + 200*3)/300.
  // Nesterov from zero momentum: anchor = -lr * (delta + 0.9 * delta).
  auto expect = [&](double delta) { return float(-0.5 * (delta + 0.9 * delta)); };
  for (auto* p : own) {
    auto mods = topo.path_modules(p->id);
    float l0 = p->params.get()[layout.groups[1].offset], l1 = p->params.get()[layout.groups[2].offset];
    float emb = p->params.get()[layout.groups[0].offset];
    // Embeddings shared by all: paths 0,2,3 present: delta = -(100*1 + 200*3 + 400*4)/700.
    EXPECT_FLOAT_EQ(emb, expect(-(100.0 * 1 + 200 * 3 + 400 * 4) / 700));
    if (mods[0] == 0) EXPECT_FLOAT_EQ(l0, expect(-1.0));
    else EXPECT_FLOAT_EQ(l0, expect(-(200.0 * 3 + 400 * 4) / 600));
    if (mods[1] == 0) EXPECT_FLOAT_EQ(l1, expect(-(100.0 * 1 + 200 * 3) / 300));
    else EXPECT_FLOAT_EQ(l1, expect(-4.0));
  }
}


// sharing_scale: a module's average times sqrt(k) (sqrt), or times the ratio of
// the paths' mean norm to the average's norm, at most sqrt(k) (capped). Path p
// moves only the elements i with i % 4 == p (orthogonal outer gradients;
// in the opposed case, paths that share a module move the same elements opposite ways), shard sizes 100..400.
TEST(OuterRound, SharingScaleSqrtAndCapped) {
  if (world_size() > 4) GTEST_SKIP();
  for (std::string mode : {"none", "sqrt", "capped"}) {
    for (bool opposed : {false, true}) {
      HandRound h({"dipaco.inner_steps=1", "dipaco.outer_lr=1", "dipaco.outer_momentum=0",
                   "dipaco.sharing_scale=" + mode});
      auto& [deck, topo, layout, k, paths, own, outer] = h;
      auto moved = [&](int p, size_t i) {  // path p's weights after its inner steps (from 0)
        // Opposed: paths sharing a module differ in one module index, so in the parity of p's bits.
        if (opposed) return float(i % 2 == 0 ? (__builtin_popcount(p) % 2 == 0 ? 1 : -1) : 0);
        return float(i % 4 == size_t(p) ? 1 : 0);
      };
      for (auto* p : own)
        for (size_t i = 0; i < layout.total; ++i) p->params.get()[i] = moved(p->id, i);
      const std::vector<double> bytes = {100, 300, 200, 400};
      outer->round(0, own, bytes);
      // The reference, in doubles: anchor = -lr * scale * (0 - weighted mean of the moved weights).
      for (auto* p : own) {
        for (int g : {0, 1, 2}) {
          const auto& grp = layout.groups[g];
          std::vector<int> with;  // the paths holding p's unit of group g
          if (g == 0) with = {0, 1, 2, 3};
          else {
            const int m = topo.path_modules(p->id)[g - 1];
            for (int q = 0; q < 4; ++q)
              if (topo.path_modules(q)[g - 1] == m) with.push_back(q);
          }
          double total = 0, mean_norm = 0, sum_sq = 0;
          for (int q : with) total += bytes[q];
          std::vector<double> avg(grp.size, 0.0);
          for (int q : with) {
            double nq = 0;
            for (size_t i = 0; i < grp.size; ++i) {
              const double d = bytes[q] / total * moved(q, grp.offset + i);
              avg[i] += d, nq += d * d;
            }
            mean_norm += std::sqrt(nq);
          }
          for (double a : avg) sum_sq += a * a;
          const double root_k = std::sqrt(double(with.size()));
          double scale = 1;
          if (mode == "sqrt") scale = root_k;
          if (mode == "capped") scale = std::min(root_k, std::max(1.0, mean_norm / std::sqrt(sum_sq)));
          if (mode == "capped" && opposed) EXPECT_DOUBLE_EQ(scale, root_k) << "anti-aligned: the cap binds";
          if (mode == "capped" && !opposed) {
            EXPECT_GT(scale, 1.05) << "orthogonal: a boost";
            EXPECT_LT(scale, root_k - 1e-3) << "unequal weights: under the cap";
          }
          for (size_t i = 0; i < grp.size; ++i)
            ASSERT_NEAR(p->params.get()[grp.offset + i], scale * avg[i], 2e-6 * (1 + std::abs(scale * avg[i])))
                << mode << (opposed ? " opposed" : " orthogonal") << " group " << g << " element " << i;
        }
      }
    }
  }
}

// An overlapped round: posted from the weights at the boundary, completed after
// the paths moved on; each copy is the new anchor plus what the path learnt in flight.
TEST(OuterRound, OverlappedRoundMergesTheStepsTrainedInFlight) {
  if (world_size() > 4) GTEST_SKIP();
  HandRound h({"dipaco.inner_steps=4", "dipaco.outer_lr=0.5", "dipaco.outer_momentum=0.9", "run.seed=11"});
  auto& [deck, topo, layout, k, paths, own, outer] = h;
  for (auto* p : own) std::fill(p->params.get(), p->params.get() + layout.total, float(p->id + 1));
  const std::vector<double> tokens = {100, 300, 200, 400};
  outer->post(0, own, tokens);
  EXPECT_TRUE(outer->in_flight());
  for (auto* p : own) std::fill(p->params.get(), p->params.get() + layout.total, float(p->id + 1) + 0.25f);  // steps in flight
  outer->progress();
  outer->complete(own);
  EXPECT_FALSE(outer->in_flight());
  auto anchor = [](double delta) { return float(-0.5 * (delta + 0.9 * delta)); };
  for (auto* p : own) {
    auto mods = topo.path_modules(p->id);
    const float* w = p->params.get();
    EXPECT_FLOAT_EQ(w[layout.groups[0].offset], anchor(-(100.0 * 1 + 300 * 2 + 200 * 3 + 400 * 4) / 1000) + 0.25f);
    EXPECT_FLOAT_EQ(w[layout.groups[1].offset],
                    (mods[0] == 0 ? anchor(-(100.0 * 1 + 300 * 2) / 400) : anchor(-(200.0 * 3 + 400 * 4) / 600)) + 0.25f);
    EXPECT_FLOAT_EQ(w[layout.groups[2].offset],
                    (mods[1] == 0 ? anchor(-(100.0 * 1 + 200 * 3) / 300) : anchor(-(300.0 * 2 + 400 * 4) / 700)) + 0.25f);
  }
}
}  // namespace

// bf16 matmuls (fp32 accumulation, fp32 master weights) track fp32 training:
// stated tolerance 3% in validation bits per byte after 30 steps.
TEST(Precision, Bf16TracksFp32) {
  std::vector<std::string> d = {"model.d_model=64", "model.n_layers=2", "model.n_heads=2", "model.context=64",
                                "train.batch_size=8", "train.steps=30", "train.warmup=5", "eval.every=0",
                                "eval.batches=2", "run.threads=1", "run.log_every=1000"};
  auto b = d;
  b.push_back("train.precision=bf16");
  RunOut f = train_on(MPI_COMM_WORLD, d), h = train_on(MPI_COMM_WORLD, b);
  double rel = std::abs(h.summary.final_eval.bpb - f.summary.final_eval.bpb) / f.summary.final_eval.bpb;
  EXPECT_LT(rel, 0.03) << "fp32 " << f.summary.final_eval.bpb << " bf16 " << h.summary.final_eval.bpb;
  EXPECT_LT(f.summary.final_eval.bpb, 6.0);
  // It really ran in bf16: the weights differ.
  EXPECT_GT(max_abs_diff(f.params[0].data(), h.params[0].data(), f.layout.total), 1e-6);
}

// dipaco.replica_mode = diloco: the ranks of one path are DiLoCo workers on
// their own data; after the last outer round every replica is identical.
TEST(DiLoCoReplicas, ReplicasAgreeAfterFinalRound) {
  int n;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  if (n < 2) GTEST_SKIP() << "needs 2 ranks";
  std::vector<std::string> d = {"model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.context=32",
                                "train.batch_size=4", "train.steps=6", "eval.every=0", "eval.batches=1",
                                "dipaco.inner_steps=3", "dipaco.replica_mode=diloco", "run.threads=1", "run.log_every=1000",
                                "train.warmup=1", "train.lr=1e-2"};
  Deck deck = load_deck("", d);
  auto k = make_cpu_kernels();
  auto train = shard_by_rule(corpus().train, 1, RouteMethod::hash), val = shard_by_rule(corpus().val, 1, RouteMethod::hash);
  Trainer t(deck, MPI_COMM_WORLD, *k, train, val, "", false);
  TrainSummary s = t.run();
  std::vector<float> mine(t.paths()[0].params.get(), t.paths()[0].params.get() + t.layout().total), first = mine;
  MPI_Bcast(first.data(), int(first.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
  EXPECT_EQ(0, std::memcmp(mine.data(), first.data(), mine.size() * 4));
  EXPECT_EQ(s.path_bytes, 0.0);  // no gradient all-reduce inside the path
  EXPECT_LT(s.final_eval.bpb, 7.5);
}
