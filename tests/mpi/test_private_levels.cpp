// dipaco.private_levels over real MPI ranks: a private level's modules are
// never averaged across paths (only among a path's DiLoCo replicas), and with
// every group private DiLoCo rounds change nothing: independent paths.
#include <gtest/gtest.h>

#include <cstring>

#include "dipaco/train/diloco.hpp"
#include "harness.hpp"

using namespace dipaco;
using namespace testing_mpi;

namespace {

const float* group_of(const RunOut& r, int path, int group) {
  return r.params[path].data() + r.layout.groups[group].offset;
}

// shared = none with every level private: the outer rounds have nothing to
// sync, so the paths train bitwise as with no outer rounds at all.
TEST(PrivateLevels, AllPrivateEqualsIndependentPaths) {
  auto base = tiny_deck();
  base.insert(base.end(), {"dipaco.shared=none", "dipaco.private_levels=0,1", "dipaco.outer_lr=0.7"});
  auto rounds = base, plain = base;
  rounds.push_back("dipaco.inner_steps=2");
  plain.push_back("dipaco.inner_steps=0");
  RunOut a = train_on(MPI_COMM_WORLD, rounds), b = train_on(MPI_COMM_WORLD, plain);
  EXPECT_EQ(a.summary.rounds, 3);
  EXPECT_EQ(a.summary.sync_bytes, 0.0);
  for (int p = 0; p < 4; ++p)
    EXPECT_EQ(0, std::memcmp(a.params[p].data(), b.params[p].data(), a.layout.total * 4)) << "path " << p;
  // Paths routed to the same module index still hold their own, different modules.
  EXPECT_GT(max_abs_diff(group_of(a, 0, 1), group_of(a, 1, 1), a.layout.groups[1].size), 1e-4);
}

TEST(PrivateLevels, PrivateLevelNeverAveragedSharedLevelIs) {
  auto d = tiny_deck();
  d.push_back("dipaco.private_levels=1");
  RunOut r = train_on(MPI_COMM_WORLD, d);
  const size_t n0 = r.layout.groups[1].size, n1 = r.layout.groups[2].size;
  // Paths 0 and 1 share level-0 module 0; paths 0 and 2 have routing index 0 at level 1, yet own modules there.
  EXPECT_EQ(0, std::memcmp(group_of(r, 0, 1), group_of(r, 1, 1), n0 * 4));
  EXPECT_GT(max_abs_diff(group_of(r, 0, 2), group_of(r, 2, 2), n1), 1e-4);
  EXPECT_GT(max_abs_diff(group_of(r, 1, 2), group_of(r, 3, 2), n1), 1e-4);
  for (int p = 1; p < 4; ++p) EXPECT_EQ(0, std::memcmp(group_of(r, 0, 0), group_of(r, p, 0), r.layout.groups[0].size * 4));
}

TEST(PrivateLevels, NoSyncUnitForAPrivateLevel) {
  Deck deck = load_deck("", {"dipaco.modules_per_level=2,2", "model.layers_per_level=1,1", "model.n_layers=2",
                             "model.d_model=32", "model.n_heads=2", "dipaco.private_levels=1"});
  Topology topo = make_topology(deck.dipaco.modules_per_level, world_size(), deck.dipaco.private_levels);
  ParamLayout layout = make_layout(model_shape(deck));
  auto k = make_cpu_kernels();
  OuterOptimizer outer(deck, topo, layout, *k, MPI_COMM_WORLD);
  std::vector<std::string> names;
  for (auto& u : outer.units()) names.push_back(u.name);
  EXPECT_EQ(names, (std::vector<std::string>{"embeddings", "L0.M0", "L0.M1"}));
}

// DiLoCo replicas of one path average its private level among themselves.
TEST(PrivateLevels, ReplicasAverageTheirPathsPrivateModule) {
  if (world_size() < 2) GTEST_SKIP() << "needs 2 ranks";
  std::vector<std::string> d = {"model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.context=32",
                                "model.layers_per_level=1,1", "dipaco.modules_per_level=1,1", "dipaco.private_levels=1",
                                "train.batch_size=4", "train.steps=6", "eval.every=0", "eval.batches=1",
                                "dipaco.inner_steps=3", "dipaco.replica_mode=diloco", "run.threads=1", "run.log_every=1000",
                                "train.warmup=1", "train.lr=1e-2"};
  Deck deck = load_deck("", d);
  auto k = make_cpu_kernels();
  auto train = shard_by_rule(corpus().train, 1, RouteMethod::hash), val = shard_by_rule(corpus().val, 1, RouteMethod::hash);
  Trainer t(deck, MPI_COMM_WORLD, *k, train, val, "", false);
  t.run();
  bool has_unit = false;
  for (auto& u : t.outer().units()) has_unit = has_unit || (u.name == "L1.P0" && u.path == 0 && u.level == 1);
  EXPECT_TRUE(has_unit);
  std::vector<float> mine(t.paths()[0].params.get(), t.paths()[0].params.get() + t.layout().total), first = mine;
  MPI_Bcast(first.data(), int(first.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
  EXPECT_EQ(0, std::memcmp(mine.data(), first.data(), mine.size() * 4));
}

}  // namespace
