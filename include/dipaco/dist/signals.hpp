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

// Why training stops before train.steps. Between ranks a request is one
// number that a MAX reduction combines (code()): 0 none, 1 a limit, else the
// signal's number (SIGTERM, SIGUSR1: never 1), so that a signal outranks a limit.
enum class StopReason { none, limit, signal };
struct StopRequest {
  StopReason reason = StopReason::none;
  int signal = 0;  // its number, for StopReason::signal

  static StopRequest limit() { return {StopReason::limit, 0}; }  // run.max_hours, run.stop_after
  static StopRequest on_signal(int sig) { return sig > 0 ? StopRequest{StopReason::signal, sig} : StopRequest{}; }
  static StopRequest from_code(int code) { return code == 1 ? limit() : on_signal(code); }
  int code() const { return reason == StopReason::none ? 0 : reason == StopReason::limit ? 1 : signal; }
  explicit operator bool() const { return reason != StopReason::none; }
};
// The request that wins when both arrive (the larger code).
inline StopRequest strongest(StopRequest a, StopRequest b) { return a.code() >= b.code() ? a : b; }

}  // namespace dipaco
