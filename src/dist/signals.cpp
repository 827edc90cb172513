#include "dipaco/dist/signals.hpp"

#include <chrono>
#include <csignal>

namespace dipaco {
namespace {
volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop(int sig) { g_stop = sig; }
}  // namespace

void install_stop_handlers() {
  std::signal(SIGTERM, on_stop);
  std::signal(SIGUSR1, on_stop);
  // A file-size limit (ulimit -f) then fails the write with EFBIG, which is
  // reported like a full disk, instead of killing the rank mid-checkpoint.
  std::signal(SIGXFSZ, SIG_IGN);
}
int stop_signal() { return g_stop; }

namespace {
const auto g_session_start = std::chrono::steady_clock::now();  // process start: the whole session counts
}
double session_seconds() { return std::chrono::duration<double>(std::chrono::steady_clock::now() - g_session_start).count(); }
void request_stop(int sig) { g_stop = sig; }

}  // namespace dipaco
