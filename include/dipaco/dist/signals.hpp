// Stop requests: SIGTERM / SIGUSR1 (Slurm preemption) set a flag that the
// trainer polls between inner steps; it then checkpoints and exits with
// kExitRequeue.
#pragma once

namespace dipaco {

void install_stop_handlers();
int stop_signal();  // 0 when no stop was requested, else the signal number
void request_stop(int sig);
// Seconds since this process started: run.max_hours counts the whole session
// (warm start, routing and training), not one training call.
double session_seconds();

}  // namespace dipaco
