#include "dipaco/train/schedule.hpp"

#include <algorithm>

#include "dipaco/io/deck.hpp"

namespace dipaco {

namespace {
bool multiple(long step, long every) { return every > 0 && step % every == 0; }
long next_multiple(long step, long every) { return (step / every + 1) * every; }
}  // namespace

RoundSchedule::RoundSchedule(const Deck& deck, long first, long until)
    : first_(first),
      end_(until < 0 ? long(deck.train.steps) : std::min(until, long(deck.train.steps))),
      steps_(deck.train.steps),
      inner_steps_(deck.dipaco.inner_steps),
      overlap_steps_(deck.dipaco.overlap_steps),
      log_every_(deck.run.log_every),
      eval_every_(deck.eval.every),
      checkpoint_every_(deck.checkpoint.every),
      stop_after_(deck.run.stop_after),
      max_hours_(deck.run.max_hours),
      early_stop_(deck.train.early_stop == EarlyStop::path) {}

long RoundSchedule::chunk_end(long step) const {
  long next = end_;
  for (long every : {log_every_, eval_every_, inner_steps_, checkpoint_every_})
    if (every > 0) next = std::min(next, next_multiple(step, every));
  // Past the limit only when a stop waits for an overlapped round's merge.
  if (stop_after_ > 0 && first_ + stop_after_ > step) next = std::min(next, first_ + stop_after_);
  if (stop_step_ > step) next = std::min(next, stop_step_);
  if (flight_.merge_step > step) next = std::min(next, flight_.merge_step);
  return next;
}

bool RoundSchedule::logs(long step) const { return multiple(step, log_every_) || step == steps_; }

bool RoundSchedule::boundary_due(long step) const {
  // Without outer rounds the log interval bounds how long rank 0's losses lag.
  const long every = inner_steps_ > 0 ? inner_steps_ : log_every_;
  if (step == end_ || step == steps_ || multiple(step, every)) return true;
  // A merge meets the world only when a checkpoint or stop agreed in flight waits for it.
  if (step == flight_.merge_step && flight_.waited_for()) return true;
  if (multiple(step, checkpoint_every_)) return true;  // a checkpoint is collective
  return stop_after_ > 0 && step - first_ >= stop_after_;
}

StopRequest RoundSchedule::limit(long step, double session_seconds) const {
  const bool hours = max_hours_ > 0 && session_seconds > max_hours_ * 3600;
  const bool steps = stop_after_ > 0 && step - first_ >= stop_after_;
  return hours || steps ? StopRequest::limit() : StopRequest{};
}

StepPlan RoundSchedule::at(long step) {
  StepPlan p;
  p.boundary = boundary_due(step) || step == stop_step_;
  // A round completes τ steps after its post, or where this session ends.
  p.complete_round = flight_.in_flight() && (step == flight_.merge_step || step == end_);
  if (p.complete_round) flight_.merge_step = -1;
  // An outer round every H steps, and a last one at the end so that shared modules agree.
  p.outer_round = inner_steps_ > 0 && (multiple(step, inner_steps_) || step == steps_);
  p.post_round = p.outer_round && overlap_steps_ > 0 && step < end_;
  if (p.post_round) flight_.merge_step = step + overlap_steps_;
  p.final = step == steps_;
  p.evaluate = p.final || multiple(step, eval_every_);
  p.back_to_best = p.final && early_stop_;
  return p;
}

BoundaryPlan RoundSchedule::after_boundary(long step, StopRequest agreed) {
  const bool interval = multiple(step, checkpoint_every_);
  if (flight_.in_flight()) {
    flight_.checkpoint_waits = flight_.checkpoint_waits || interval || bool(agreed);
    flight_.stop_waits = strongest(flight_.stop_waits, agreed);
    return {};
  }
  const StopRequest stop = strongest(agreed, flight_.stop_waits);
  BoundaryPlan b;
  b.checkpoint = bool(stop) || interval || step == end_ || flight_.checkpoint_waits;
  if (step < steps_) b.stop = stop;  // a stop at train.steps is the end
  flight_.checkpoint_waits = false, flight_.stop_waits = {};
  return b;
}

}  // namespace dipaco
