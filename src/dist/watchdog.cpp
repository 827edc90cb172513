#include "dipaco/dist/watchdog.hpp"
#include "dipaco/io/run_lock.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "dipaco/cmd/app.hpp"

namespace dipaco {
namespace {

using Clock = std::chrono::steady_clock;
std::atomic<long long> g_entered{0};  // steady-clock ns when the current collective began; 0: none
std::atomic<const char*> g_what{""};
std::thread g_thread;
std::mutex g_mutex;
std::condition_variable g_cv;
bool g_stop = false;

long long now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }

}  // namespace

void start_watchdog(double timeout, int rank) {
  g_stop = false;
  g_thread = std::thread([timeout, rank] {
    std::unique_lock<std::mutex> lock(g_mutex);
    while (!g_cv.wait_for(lock, std::chrono::milliseconds(250), [] { return g_stop; })) {
      long long t = g_entered.load();
      if (t == 0 || (now_ns() - t) / 1e9 < timeout) continue;
      std::fprintf(stderr,
                   "dipaco: error: rank %d waited %.0f s in %s: a peer rank died or stopped responding "
                   "(run.collective_timeout = %g s); stopping the job (exit %d). The last good checkpoint is intact: "
                   "run the same command again to resume.\n",
                   rank, (now_ns() - t) / 1e9, g_what.load(), timeout, int(kExitPeerLost));
      std::fflush(stderr);
      release_run_lock();
      _exit(kExitPeerLost);  // MPI cannot be called from here; mpirun ends the other ranks
    }
  });
}

void stop_watchdog() {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_stop = true;
  }
  g_cv.notify_all();
  if (g_thread.joinable()) g_thread.join();
}

CollectiveScope::CollectiveScope(const char* what) : outer_(g_entered.load() == 0) {
  if (outer_) g_what = what, g_entered = now_ns();
}
CollectiveScope::~CollectiveScope() {
  if (outer_) g_entered = 0;
}

}  // namespace dipaco
