#include "dipaco/signals.hpp"

#include <csignal>

namespace dipaco {
namespace {
volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop(int sig) { g_stop = sig; }
}  // namespace

void install_stop_handlers() {
  std::signal(SIGTERM, on_stop);
  std::signal(SIGUSR1, on_stop);
}
int stop_signal() { return g_stop; }
void request_stop(int sig) { g_stop = sig; }

}  // namespace dipaco
