#include "dipaco/dist/fault.hpp"

#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <thread>

#include "dipaco/io/deck.hpp"

namespace dipaco {

void fault_point(const Deck& deck, const char* phase) {
  const std::string& at = deck.fault.kill_at;
  if (at.empty()) return;
  const auto colon = at.find(':');
  const std::string want = at.substr(0, colon);
  if (want != phase) return;
  const long n = colon == std::string::npos ? 1 : std::atol(at.c_str() + colon + 1);
  static std::map<std::string, long> hits;  // per phase, this session
  if (++hits[want] != n) return;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != deck.fault.kill_rank) return;
  const bool launcher = deck.fault.kill_target == KillTarget::mpirun, hang = deck.fault.kill_target == KillTarget::stop;
  std::fprintf(stderr, "fault: rank %d at %s #%ld: %s\n", rank, phase, n,
               hang ? "SIGSTOP to this rank" : launcher ? "SIGKILL to mpirun and this rank" : "SIGKILL to this rank");
  std::fflush(stderr);
  if (hang) {
    raise(SIGSTOP);
    return;
  }
  if (launcher) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // mpirun forwards the line above first
    kill(getppid(), SIGKILL);  // under mpirun on one node, the launcher is the parent
  }
  raise(SIGKILL);
}

void fault_step_delay(const Deck& deck) {
  if (deck.fault.step_delay > 0) std::this_thread::sleep_for(std::chrono::duration<double>(deck.fault.step_delay));
}

int straggler_at(const Deck& deck, long step, int paths) {
  if (deck.fault.slow_path < 0 || deck.fault.slow_factor <= 1) return -1;
  const long moves = deck.fault.slow_moves > 0 ? step / deck.fault.slow_moves : 0;
  return int((deck.fault.slow_path + moves) % paths);
}

void fault_slow_path(const Deck& deck, int path, long step, int paths, double seconds) {
  if (path != straggler_at(deck, step, paths)) return;
  std::this_thread::sleep_for(std::chrono::duration<double>((deck.fault.slow_factor - 1) * seconds));
}

bool fault_diverges(const Deck& deck, int path, long step) {
  if (path != deck.fault.diverge_path) return false;
  return std::count(deck.fault.diverge_steps.begin(), deck.fault.diverge_steps.end(), step) > 0;
}

}  // namespace dipaco
