// Collectives that cannot hang forever. A watchdog thread watches the one
// blocking MPI call the rank is in (marked by a CollectiveScope); when it has
// waited longer than run.collective_timeout, a peer rank is dead or stopped:
// the rank says so and exits with kExitPeerLost, and mpirun ends the job.
// Checkpoints are written to a temporary name first, so the last good one
// stays intact.
#pragma once

namespace dipaco {

void start_watchdog(double timeout_seconds, int rank);
void stop_watchdog();

// Runs one blocking collective under a CollectiveScope.
template <class F>
void watched(const char* what, F&& collective);

class CollectiveScope {
 public:
  explicit CollectiveScope(const char* what);
  ~CollectiveScope();
  CollectiveScope(const CollectiveScope&) = delete;
  CollectiveScope& operator=(const CollectiveScope&) = delete;

 private:
  bool outer_;
};

template <class F>
void watched(const char* what, F&& collective) {
  CollectiveScope scope(what);
  collective();
}

}  // namespace dipaco
