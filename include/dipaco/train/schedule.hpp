// When things happen in training. The DiPaCo paper's loop: every path takes
// H inner steps (dipaco.inner_steps), then an outer round syncs the modules
// they share. Around it the trainer logs, evaluates, checkpoints and stops;
// the ranks meet at round boundaries only (round_boundary.cpp). The schedule
// says, from the deck and the step, what a step does; Trainer::run does it.
// It holds no MPI and no weights, so it is tested alone (tests/unit/test_schedule.cpp).
#pragma once

#include "dipaco/dist/signals.hpp"

namespace dipaco {

struct Deck;

// What the step that ends a chunk does, in the order the trainer does it.
struct StepPlan {
  bool boundary = false;        // the world meets: pending metrics, the stop agreement
  bool complete_round = false;  // the overlapped round in flight merges (before any new round)
  bool outer_round = false;     // an outer round: run to its end, or posted
  bool post_round = false;      //   posted (dipaco.overlap_steps = τ), merged τ steps later
  bool evaluate = false;        // validation bits per byte, reduced at the next boundary
  bool final = false;           // train.steps: the boundary's evaluation is the run's last
  bool back_to_best = false;    // train.early_stop = path: every path ends on its best weights
};

// What a boundary does once the world agreed on stopping.
struct BoundaryPlan {
  bool checkpoint = false;
  StopRequest stop;  // none: training goes on
};

// An outer round posted and not yet merged. A checkpoint holds no round in
// flight, so a checkpoint or stop that falls inside waits for the merge.
struct OverlappedRound {
  long merge_step = -1;  // -1: none in flight
  bool checkpoint_waits = false;
  StopRequest stop_waits;

  bool in_flight() const { return merge_step >= 0; }
  bool waited_for() const { return checkpoint_waits || bool(stop_waits); }
};

class RoundSchedule {
 public:
  // One call of Trainer::run: from `first` (the step training resumed at) to
  // `until` (-1: train.steps).
  RoundSchedule(const Deck& deck, long first, long until = -1);

  long end() const { return end_; }
  // Step 0: the weights before training are evaluated (the run's final
  // evaluation when train.steps = 0).
  bool evaluates_first() const { return first_ == 0; }
  // Resumed a run that was already trained: only evaluated.
  bool trained_before() const { return steps_ > 0 && first_ >= steps_; }

  // The next step at which something happens, after `step`.
  long chunk_end(long step) const;
  // Rank 0's progress line at `step` (said before the ranks agree on anything).
  bool logs(long step) const;
  // The world meets at `step` whatever the stop agreement says: the end of an
  // outer round (of a log interval without rounds), a checkpoint, a limit, the end.
  bool boundary_due(long step) const;
  // This session's limits at `step`: run.stop_after, run.max_hours.
  StopRequest limit(long step, double session_seconds) const;
  // The step every rank stops at, once agreed (-1: none yet); a boundary.
  void stop_at(long step) { stop_step_ = step; }

  // What `step` does; called once per chunk end, in order (it posts and merges rounds).
  StepPlan at(long step);
  // After the boundary at `step`: a checkpoint, and whether to stop.
  BoundaryPlan after_boundary(long step, StopRequest agreed);

  const OverlappedRound& flight() const { return flight_; }

 private:
  long first_, end_, steps_;
  long inner_steps_, overlap_steps_;            // H, τ
  long log_every_, eval_every_, checkpoint_every_;
  long stop_after_;
  double max_hours_;
  bool early_stop_;
  long stop_step_ = -1;
  OverlappedRound flight_;
};

}  // namespace dipaco
