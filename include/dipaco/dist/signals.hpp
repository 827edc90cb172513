// Stop requests: SIGTERM / SIGUSR1 (Slurm preemption) set a flag that the
// trainer polls between inner steps; it then checkpoints and exits with
// kExitRequeue. The signals are taken by one thread that waits for them and
// does nothing else: no compute thread is ever interrupted by one.
#pragma once

namespace dipaco {

// Call first, before any other thread exists (MPI's and OpenMP's inherit the mask).
void install_stop_handlers();
int stop_signal();  // 0 when no stop was requested, else the signal number
// Seconds since this process started: run.max_hours counts the whole session
// (warm start, routing and training), not one training call.
double session_seconds();

}  // namespace dipaco
