// RoundSchedule alone: which steps end chunks, meet the world, run or post
// outer rounds, merge them, evaluate, checkpoint and stop, for the deck keys
// that decide it. drive() uses the schedule as Trainer::run does, with the
// stop agreement of one rank (a request posted at a chunk end is agreed at
// once) or of ranks further on (the agreed step given).
#include <gtest/gtest.h>

#include <csignal>
#include <string>
#include <vector>

#include "dipaco/io/deck.hpp"
#include "dipaco/train/schedule.hpp"

using namespace dipaco;

namespace {

using Steps = std::vector<long>;

struct Trace {
  Steps chunks, logs, boundaries, rounds, posts, merges, evals, checkpoints;
  long final_step = -1;
  bool back_to_best = false;
  long stopped_at = -1;
  StopRequest stop;
};

// A stop request that reaches this rank at step `arrives`; the world agrees
// to stop at `agreed_at` (-1: the chunk end where this rank posts it).
struct Incoming {
  long arrives = -1;
  StopRequest request;
  long agreed_at = -1;
};

Deck deck(std::vector<std::string> keys) {
  keys.insert(keys.begin(), {"run.log_every=100", "eval.every=0", "checkpoint.every=0"});
  return load_deck("", keys);
}

Trace drive(const Deck& d, long first = 0, long until = -1, Incoming in = {}, double seconds_per_step = 0) {
  RoundSchedule s(d, first, until);
  Trace t;
  long step = first, agreed_step = -1;
  StopRequest agreed_request;
  while (step < s.end()) {
    step = s.chunk_end(step);
    t.chunks.push_back(step);
    if (s.logs(step)) t.logs.push_back(step);
    const StopRequest signal = in.arrives >= 0 && step >= in.arrives ? in.request : StopRequest{};
    const StopRequest mine = strongest(signal, s.limit(step, double(step - first) * seconds_per_step));
    // Posted between boundaries only; at a boundary the request rides its all-reduce.
    if (agreed_step < 0 && mine && !s.boundary_due(step))
      agreed_step = in.agreed_at >= 0 ? in.agreed_at : step, agreed_request = mine;
    s.stop_at(agreed_step);
    const StepPlan p = s.at(step);
    if (p.complete_round) t.merges.push_back(step);
    if (p.outer_round) (p.post_round ? t.posts : t.rounds).push_back(step);
    if (p.evaluate) t.evals.push_back(step);
    if (p.final) t.final_step = step, t.back_to_best = p.back_to_best;
    if (!p.boundary) continue;
    t.boundaries.push_back(step);
    const BoundaryPlan b = s.after_boundary(step, strongest(mine, agreed_request));
    if (b.checkpoint) t.checkpoints.push_back(step);
    if (b.stop) {
      t.stopped_at = step, t.stop = b.stop;
      break;
    }
  }
  return t;
}

}  // namespace

TEST(Schedule, StopRequestsTravelAsOneNumber) {
  EXPECT_FALSE(StopRequest{});
  EXPECT_EQ(StopRequest::from_code(0).reason, StopReason::none);
  EXPECT_EQ(StopRequest::from_code(1).reason, StopReason::limit);
  const StopRequest term = StopRequest::from_code(SIGTERM);
  EXPECT_EQ(term.reason, StopReason::signal);
  EXPECT_EQ(term.signal, SIGTERM);
  EXPECT_EQ(term.code(), SIGTERM);
  EXPECT_EQ(StopRequest::on_signal(0).reason, StopReason::none);
  // A signal outranks a limit, whichever comes first.
  EXPECT_EQ(strongest(StopRequest::limit(), term).reason, StopReason::signal);
  EXPECT_EQ(strongest(term, StopRequest::limit()).signal, SIGTERM);
  EXPECT_EQ(strongest({}, StopRequest::limit()).reason, StopReason::limit);
}

// No outer rounds: the world meets every run.log_every steps; evaluations wait for it.
TEST(Schedule, PlainTrainingMeetsAtLogLines) {
  const Trace t = drive(deck({"train.steps=60", "run.log_every=10", "eval.every=25"}));
  EXPECT_EQ(t.chunks, (Steps{10, 20, 25, 30, 40, 50, 60}));
  EXPECT_EQ(t.logs, (Steps{10, 20, 30, 40, 50, 60}));
  EXPECT_EQ(t.boundaries, (Steps{10, 20, 30, 40, 50, 60}));
  EXPECT_EQ(t.evals, (Steps{25, 50, 60}));
  EXPECT_TRUE(t.rounds.empty() && t.posts.empty());
  EXPECT_EQ(t.checkpoints, (Steps{60}));
  EXPECT_EQ(t.final_step, 60);
  EXPECT_FALSE(t.back_to_best);
  EXPECT_EQ(t.stopped_at, -1);
}

// An outer round every H steps and a last one at train.steps; log lines do not meet the world.
TEST(Schedule, OuterRoundEveryHStepsAndAtTheEnd) {
  const Trace t = drive(deck({"train.steps=30", "dipaco.inner_steps=8", "run.log_every=5"}));
  EXPECT_EQ(t.chunks, (Steps{5, 8, 10, 15, 16, 20, 24, 25, 30}));
  EXPECT_EQ(t.rounds, (Steps{8, 16, 24, 30}));
  EXPECT_EQ(t.boundaries, (Steps{8, 16, 24, 30}));
  EXPECT_EQ(t.evals, (Steps{30}));
  EXPECT_EQ(t.checkpoints, (Steps{30}));
}

TEST(Schedule, CheckpointsAreBoundaries) {
  const Trace t = drive(deck({"train.steps=40", "dipaco.inner_steps=8", "checkpoint.every=12"}));
  EXPECT_EQ(t.boundaries, (Steps{8, 12, 16, 24, 32, 36, 40}));
  EXPECT_EQ(t.checkpoints, (Steps{12, 24, 36, 40}));
  EXPECT_EQ(t.rounds, (Steps{8, 16, 24, 32, 40}));
}

// Overlapped rounds: posted at the boundary, merged τ steps later without a
// world meeting; the last round, at the end, is run to its end.
TEST(Schedule, OverlappedRoundsMergeTauStepsLater) {
  const Trace t = drive(deck({"train.steps=24", "dipaco.inner_steps=8", "dipaco.overlap_steps=2", "dipaco.outer_dtype=bf16"}));
  EXPECT_EQ(t.chunks, (Steps{8, 10, 16, 18, 24}));
  EXPECT_EQ(t.posts, (Steps{8, 16}));
  EXPECT_EQ(t.merges, (Steps{10, 18}));
  EXPECT_EQ(t.rounds, (Steps{24}));
  EXPECT_EQ(t.boundaries, (Steps{8, 16, 24}));
  EXPECT_EQ(t.checkpoints, (Steps{24}));
}

// A checkpoint holds no round in flight: one due at the post is written at the merge, which then meets the world.
TEST(Schedule, CheckpointInFlightWaitsForTheMerge) {
  const Trace t = drive(deck({"train.steps=24", "dipaco.inner_steps=8", "dipaco.overlap_steps=2", "dipaco.outer_dtype=bf16",
                              "checkpoint.every=8"}));
  EXPECT_EQ(t.boundaries, (Steps{8, 10, 16, 18, 24}));
  EXPECT_EQ(t.checkpoints, (Steps{10, 18, 24}));
  EXPECT_EQ(t.merges, (Steps{10, 18}));
}

// A session that ends before train.steps (re-sharding by loss): the round there is run to its end.
TEST(Schedule, SessionEndsAtUntil) {
  const Trace t = drive(deck({"train.steps=40", "dipaco.inner_steps=8", "dipaco.overlap_steps=2", "dipaco.outer_dtype=bf16"}), 0, 16);
  EXPECT_EQ(t.posts, (Steps{8}));
  EXPECT_EQ(t.rounds, (Steps{16}));
  EXPECT_EQ(t.checkpoints, (Steps{16}));
  EXPECT_EQ(t.final_step, -1);
  EXPECT_EQ(t.evals, Steps{});
  EXPECT_EQ(t.stopped_at, -1);
  // The next session starts there.
  const Trace u = drive(deck({"train.steps=40", "dipaco.inner_steps=8"}), 16);
  EXPECT_EQ(u.rounds, (Steps{24, 32, 40}));
  EXPECT_EQ(u.final_step, 40);
}

// run.stop_after counts this session's steps: a boundary there, a checkpoint, a stop for a limit.
TEST(Schedule, StopAfterCountsTheSession) {
  const Deck d = deck({"train.steps=40", "dipaco.inner_steps=8", "run.stop_after=10"});
  const Trace t = drive(d);
  EXPECT_EQ(t.chunks, (Steps{8, 10}));
  EXPECT_EQ(t.checkpoints, (Steps{10}));
  EXPECT_EQ(t.stopped_at, 10);
  EXPECT_EQ(t.stop.reason, StopReason::limit);
  const Trace resumed = drive(d, 10);
  EXPECT_EQ(resumed.chunks, (Steps{16, 20}));
  EXPECT_EQ(resumed.stopped_at, 20);
  EXPECT_FALSE(RoundSchedule(d, 10).evaluates_first());
}

TEST(Schedule, StopAfterInFlightStopsAtTheMerge) {
  const Trace t = drive(deck({"train.steps=40", "dipaco.inner_steps=8", "dipaco.overlap_steps=4", "dipaco.outer_dtype=bf16",
                              "run.stop_after=10"}));
  EXPECT_EQ(t.chunks, (Steps{8, 10, 12}));
  EXPECT_EQ(t.boundaries, (Steps{8, 10, 12}));
  EXPECT_EQ(t.merges, (Steps{12}));
  EXPECT_EQ(t.checkpoints, (Steps{12}));
  EXPECT_EQ(t.stopped_at, 12);
  EXPECT_EQ(t.stop.reason, StopReason::limit);
}

TEST(Schedule, MaxHoursIsALimit) {
  const Deck d = deck({"train.steps=40", "dipaco.inner_steps=8", "run.max_hours=0.05", "run.log_every=1"});
  const RoundSchedule s(d, 0);
  EXPECT_FALSE(s.limit(3, 179));
  EXPECT_EQ(s.limit(3, 181).reason, StopReason::limit);
  const Trace t = drive(d, 0, -1, {}, 100);  // 100 s a step: past 180 s at step 2
  EXPECT_EQ(t.stopped_at, 2);
  EXPECT_EQ(t.stop.reason, StopReason::limit);
  EXPECT_EQ(t.checkpoints, (Steps{2}));
}

// A signal between boundaries: posted at the next chunk end, agreed there, and that step becomes a boundary.
TEST(Schedule, StopRequestMidRound) {
  const Trace t = drive(deck({"train.steps=40", "dipaco.inner_steps=8", "run.log_every=2"}), 0, -1,
                        {5, StopRequest::on_signal(SIGTERM)});
  EXPECT_EQ(t.chunks, (Steps{2, 4, 6}));
  EXPECT_EQ(t.boundaries, (Steps{6}));
  EXPECT_EQ(t.checkpoints, (Steps{6}));
  EXPECT_EQ(t.stopped_at, 6);
  EXPECT_EQ(t.stop.reason, StopReason::signal);
  EXPECT_EQ(t.stop.signal, SIGTERM);
  EXPECT_TRUE(t.rounds.empty());
}

// Ranks further on: the world stops at the furthest rank's step, which ends this rank's chunk.
TEST(Schedule, StopAgreedAtALaterStep) {
  const Trace t = drive(deck({"train.steps=40", "dipaco.inner_steps=8", "run.log_every=4"}), 0, -1,
                        {3, StopRequest::on_signal(SIGUSR1), 6});
  EXPECT_EQ(t.chunks, (Steps{4, 6}));
  EXPECT_EQ(t.stopped_at, 6);
  EXPECT_EQ(t.stop.signal, SIGUSR1);
}

// A request at a boundary rides its all-reduce: no earlier stop step.
TEST(Schedule, StopRequestAtABoundary) {
  const Trace t = drive(deck({"train.steps=40", "dipaco.inner_steps=8"}), 0, -1, {8, StopRequest::on_signal(SIGTERM)});
  EXPECT_EQ(t.rounds, (Steps{8}));
  EXPECT_EQ(t.stopped_at, 8);
  EXPECT_EQ(t.checkpoints, (Steps{8}));
}

// A stop agreed while a round flies waits for its merge: the checkpoint never holds a round in flight.
TEST(Schedule, StopRequestInFlightWaitsForTheMerge) {
  const Trace t = drive(deck({"train.steps=40", "dipaco.inner_steps=8", "dipaco.overlap_steps=4", "dipaco.outer_dtype=bf16",
                              "run.log_every=2"}),
                        0, -1, {9, StopRequest::on_signal(SIGTERM)});
  EXPECT_EQ(t.posts, (Steps{8}));
  EXPECT_EQ(t.boundaries, (Steps{8, 10, 12}));
  EXPECT_EQ(t.merges, (Steps{12}));
  EXPECT_EQ(t.checkpoints, (Steps{12}));
  EXPECT_EQ(t.stopped_at, 12);
  EXPECT_EQ(t.stop.signal, SIGTERM);
}

// A stop at train.steps is the end: checkpointed, not a stop.
TEST(Schedule, StopAtTheLastStepIsTheEnd) {
  const Trace t = drive(deck({"train.steps=16", "dipaco.inner_steps=8"}), 0, -1, {16, StopRequest::limit()});
  EXPECT_EQ(t.checkpoints, (Steps{16}));
  EXPECT_EQ(t.stopped_at, -1);
  EXPECT_EQ(t.final_step, 16);
}

TEST(Schedule, EarlyStopEndsOnTheBestWeights) {
  const Trace t = drive(deck({"train.steps=20", "dipaco.inner_steps=5", "eval.every=10", "train.early_stop=path"}));
  EXPECT_EQ(t.evals, (Steps{10, 20}));
  EXPECT_EQ(t.final_step, 20);
  EXPECT_TRUE(t.back_to_best);
}

TEST(Schedule, FirstAndFinishedSessions) {
  const Deck d = deck({"train.steps=16", "dipaco.inner_steps=8"});
  EXPECT_TRUE(RoundSchedule(d, 0).evaluates_first());
  EXPECT_FALSE(RoundSchedule(d, 0).trained_before());
  const RoundSchedule done(d, 16);
  EXPECT_TRUE(done.trained_before());
  EXPECT_EQ(done.end(), 16);
  EXPECT_TRUE(drive(d, 16).chunks.empty());
  // train.steps = 0: only the first evaluation, which is the run's.
  const RoundSchedule none(deck({"train.steps=0"}), 0);
  EXPECT_TRUE(none.evaluates_first());
  EXPECT_FALSE(none.trained_before());
  EXPECT_EQ(none.end(), 0);
}
