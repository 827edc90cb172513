#include "dipaco/dist/signals.hpp"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>

namespace dipaco {
namespace {
std::atomic<int> g_stop{0};
}  // namespace

// Why a waiting thread and not a handler: a handled signal runs on the
// stack of whichever thread it hits, in the middle of what that thread runs.
// Landing inside a oneDNN matmul (the attention's), it left the heap
// corrupted in 3 of 28 preemptions of a 2-rank run, and within seconds under
// a storm of signals (tests/integration/faults.sh). Blocked in every thread
// and taken by sigwait here, a signal interrupts nothing.
void install_stop_handlers() {
  sigset_t stops;
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &stops, nullptr);  // inherited by every thread created from here on
  std::thread([stops] {
    for (;;) {
      int sig = 0;
      if (sigwait(&stops, &sig) == 0) g_stop = sig;
    }
  }).detach();
  // A file-size limit (ulimit -f) then fails the write with EFBIG, which is
  // reported like a full disk, instead of killing the rank mid-checkpoint.
  std::signal(SIGXFSZ, SIG_IGN);
}
int stop_signal() { return g_stop; }

namespace {
const auto g_session_start = std::chrono::steady_clock::now();  // process start: the whole session counts
}
double session_seconds() { return std::chrono::duration<double>(std::chrono::steady_clock::now() - g_session_start).count(); }

}  // namespace dipaco
