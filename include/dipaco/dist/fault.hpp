// Fault injection for tests that interrupt a run: the condition is explicit
// (a named point reached a given number of times), never a race against the
// machine's speed.
//   fault.kill_at = PHASE:N   the N-th time rank fault.kill_rank reaches PHASE
//                             in this session it dies by SIGKILL (fault.kill_target
//                             = rank), or SIGKILLs its mpirun first (= mpirun),
//                             or stops itself with SIGSTOP (= stop: a hung peer)
//   fault.step_delay = S      every inner step sleeps S seconds (keeps a run
//                             alive long enough to be stopped from outside)
// Phases: warm_start (an inner step of the warm start), route (features done,
// router not yet fitted), inner (an inner step of training), outer_allreduce
// (just before a module's all-reduce: the peers are inside it), checkpoint
// (half-way through writing one), eval (an evaluation before its all-reduce).
// None of these keys changes results, so none is part of a stage's stamp.
// Those that do (fault.drop_outer_prob; fault.diverge_path and
// fault.diverge_steps: that path's loss is NaN at those inner steps, counted
// from 1) are part of the train stage's.
#pragma once

namespace dipaco {

struct Deck;

void fault_point(const Deck& deck, const char* phase);
void fault_step_delay(const Deck& deck);
// fault.slow_path: path `path` sleeps (fault.slow_factor - 1) x the `seconds` its inner step `step`
// took; with fault.slow_moves the straggler is the next path every slow_moves steps (of `paths`).
void fault_slow_path(const Deck& deck, int path, long step, int paths, double seconds);
// The straggler at inner step `step` (-1: none).
int straggler_at(const Deck& deck, long step, int paths);
// Whether fault.diverge_path = path has its loss made NaN at inner step `step` (from 1).
bool fault_diverges(const Deck& deck, int path, long step);

}  // namespace dipaco
