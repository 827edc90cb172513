// A path that diverges: seen on the step, back to its anchors, left out of
// its round, never averaged in; past train.diverge_limit (or without anchors)
// every rank ends together; no NaN reaches a checkpoint or a score.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include <hdf5.h>

#include "dipaco/data/routed_eval.hpp"
#include "dipaco/io/checkpoint.hpp"
#include "dipaco/train/divergence.hpp"
#include "harness.hpp"

using namespace dipaco;
using namespace testing_mpi;
namespace fs = std::filesystem;

namespace {

struct TinyRun {
  Deck deck;
  std::unique_ptr<Kernels> k;
  std::unique_ptr<Trainer> t;
};

// A trainer of the tiny 2x2 deck (plus `extra`) writing into its own run directory.
TinyRun make_run(const std::string& tag, std::vector<std::string> extra) {
  TinyRun r;
  auto d = tiny_deck();
  d.insert(d.end(), extra.begin(), extra.end());
  r.deck = load_deck("", d);
  r.k = make_cpu_kernels();
  const int P = path_count(r.deck.dipaco.modules_per_level);
  auto train = shard_by_rule(corpus().train, P, r.deck.route.method);
  auto val = shard_by_rule(corpus().val, P, r.deck.route.method);
  r.t = std::make_unique<Trainer>(r.deck, MPI_COMM_WORLD, *r.k, train, val, shared_tmpdir(tag), false);
  return r;
}

bool finite(Kernels& k, const float* x, size_t n) { return std::isfinite(k.sum_squares(x, n)); }

// Every own path's weights and every own anchor finite, on every rank.
bool all_finite(TinyRun& r) {
  int ok = 1;
  for (auto& p : r.t->paths()) ok &= finite(*r.k, p.params.get(), r.t->layout().total);
  for (auto& u : r.t->outer().units())
    if (u.mine) ok &= finite(*r.k, u.anchor.get(), r.t->layout().groups[u.group].size);
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return ok;
}

void poison(TinyRun& r, int path) {
  for (auto& p : r.t->paths())
    if (p.id == path) {
      const auto& g = r.t->layout().groups.back();  // its last level's module
      std::vector<float> nan(g.size, NAN);
      r.k->to_device(p.params.get() + g.offset, nan.data(), g.size * sizeof(float));
    }
}

}  // namespace

// Path 1's loss is NaN at step 2: it goes back to its anchors, skips that
// batch and is left out of round 0 (its outer gradient, finite or not, not
// counted); the run ends finite, shared modules agreeing, the event counted once.
TEST(Divergence, PathLeftOutOfItsRoundAndBackToItsAnchors) {
  TinyRun r = make_run("div_path", {"fault.diverge_path=1", "fault.diverge_steps=2"});
  const TrainSummary s = r.t->run();
  EXPECT_EQ(s.diverged, 1);
  EXPECT_TRUE(all_finite(r));
  EXPECT_TRUE(std::isfinite(s.final_eval.bpb));
  for (auto& p : r.t->paths()) EXPECT_EQ(p.step, 6);  // the skipped batch counts as a step
}

// Poisoned weights (not a poisoned loss): the same, and the module path 1
// shares with path 0 never takes a NaN.
TEST(Divergence, NaNWeightsNeverReachAnAnchor) {
  TinyRun r = make_run("div_weights", {});
  poison(r, 1);
  const TrainSummary s = r.t->run();
  EXPECT_EQ(s.diverged, 1);
  EXPECT_TRUE(all_finite(r));
}

// Past train.diverge_limit every rank ends together with DivergedError.
TEST(Divergence, PastTheLimitEveryRankEnds) {
  TinyRun r = make_run("div_limit", {"train.diverge_limit=1", "fault.diverge_path=2", "fault.diverge_steps=1,4"});
  EXPECT_THROW(r.t->run(), DivergedError);
}

// Dense training whose weights were never good (no checkpoint, no finite start) has nothing to go back to:
// the first divergence ends it, on every rank.
TEST(Divergence, DenseRunEndsAtTheFirst) {
  TinyRun r = make_run("div_dense", {"dipaco.modules_per_level=1", "model.layers_per_level=0", "dipaco.inner_steps=0"});
  poison(r, 0);
  EXPECT_THROW(r.t->run(), DivergedError);
}

// Dense training that diverges goes back to its last good weights (here the start: no checkpoint yet),
// skips ahead and finishes; the weights it ends with are finite, the same on every rank.
TEST(Divergence, DenseRunRollsBackToItsLastGoodWeights) {
  TinyRun r = make_run("div_dense_back", {"dipaco.modules_per_level=1", "model.layers_per_level=0", "dipaco.inner_steps=0",
                                          "fault.diverge_path=0", "fault.diverge_steps=3,5"});
  const TrainSummary s = r.t->run();
  EXPECT_EQ(s.rolled_back, 2);
  EXPECT_EQ(r.t->progress().step, r.deck.train.steps);
  EXPECT_TRUE(all_finite(r));
}

// ... and past train.diverge_limit the job ends, on every rank.
TEST(Divergence, DenseRunPastTheLimitEnds) {
  TinyRun r = make_run("div_dense_limit", {"dipaco.modules_per_level=1", "model.layers_per_level=0", "dipaco.inner_steps=0",
                                           "train.diverge_limit=1", "fault.diverge_path=0", "fault.diverge_steps=2,4"});
  EXPECT_THROW(r.t->run(), DivergedError);
}

// A checkpoint of weights that are not finite is refused by every rank; nothing is published.
TEST(Divergence, CheckpointNeverHoldsNaN) {
  TinyRun r = make_run("div_ckpt", {});
  Checkpointer c(r.deck, shared_tmpdir("div_ckpt_dir"), MPI_COMM_WORLD);
  poison(r, 3);
  EXPECT_THROW(c.save(*r.t), DivergedError);
  MPI_Barrier(MPI_COMM_WORLD);
  EXPECT_FALSE(fs::exists(c.dir() + "/latest"));
}

// Scores of a path whose weights are NaN stay NaN (the fixed-point sum once
// made numbers of them); the other paths' scores are untouched.
TEST(Divergence, ScoresOfNaNWeightsAreNaN) {
  TinyRun r = make_run("div_score", {});
  poison(r, 1);
  std::vector<ScoreItem> items;
  const std::vector<Document> val{corpus().val[0], corpus().val[1], corpus().val[2], corpus().val[3]};
  for (int p = 0; p < 4; ++p) add_items(items, p, &val[p], 1, std::min<size_t>(val[p].text.size(), 60), 32);
  const std::vector<double> loss = score_items(*r.t, items);
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].path == 1) EXPECT_TRUE(std::isnan(loss[i])) << i;
    else EXPECT_TRUE(std::isfinite(loss[i]) && loss[i] > 0) << i;
  }
  EXPECT_FALSE(std::isfinite(r.t->evaluate().bpb));
}

// A checkpoint holding NaN with matching checksums (as earlier versions wrote
// them) is never resumed from: auto restart skips it for the one before.
TEST(Divergence, ResumeSkipsACheckpointHoldingNaN) {
  std::string dir;
  {
    TinyRun r = make_run("div_resume", {"checkpoint.every=3"});
    dir = shared_tmpdir("div_resume_run");
    Checkpointer c(r.deck, dir, MPI_COMM_WORLD);
    r.t->set_checkpointer(&c);
    r.t->run();
  }
  const std::string newest = dir + "/checkpoints/ckpt-00000006.h5";
  if (world_rank() == 0) {
    hid_t f = H5Fopen(newest.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/modules/L0/M0/anchor", H5P_DEFAULT);
    hid_t space = H5Dget_space(d);
    std::vector<float> nan(size_t(H5Sget_simple_extent_npoints(space)), NAN);
    EXPECT_GE(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, nan.data()), 0);
    const uint64_t sum = checksum(nan.data(), nan.size() * sizeof(float));
    hid_t a = H5Aopen(d, "checksum", H5P_DEFAULT);
    EXPECT_GE(H5Awrite(a, H5T_NATIVE_UINT64, &sum), 0);
    H5Aclose(a), H5Sclose(space), H5Dclose(d), H5Fclose(f);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  TinyRun again = make_run("div_resume2", {"checkpoint.every=3"});
  Checkpointer c(again.deck, dir, MPI_COMM_WORLD);
  EXPECT_EQ(c.load(*again.t, "auto", false), dir + "/checkpoints/ckpt-00000003.h5");
  EXPECT_TRUE(all_finite(again));
}
