// One run at a time in a run directory: two runs writing the same
// metrics.jsonl and checkpoints would corrupt them silently. Rank 0 holds
// <run dir>/lock for the whole run: an flock on it says whether its holder is
// alive (the kernel drops it when a process dies, kill -9 included), and its
// text (host, pid, Slurm job, start time) names the holder in the refusal.
#pragma once
#include <mpi.h>

#include <string>

namespace dipaco {

class RunLock {
 public:
  // Collective over comm: rank 0 takes dir/lock; when the directory is in use
  // every rank throws DeckError with the holder named, when the lock file
  // cannot be written WriteError. A lock left by a dead process on this host
  // is taken over with a note; one written on another host is respected (its
  // liveness cannot be checked from here).
  RunLock(const std::string& dir, int rank, MPI_Comm comm);
  ~RunLock();  // removes the file (also on exit 3 and while an exception unwinds)
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  friend void release_run_lock();
  void release();
  std::string file_;
  int fd_ = -1;
};

// Removes this process's run lock now: for the paths that leave with _exit,
// without unwinding (a checkpoint abandoned, the watchdog). A lock left behind
// would refuse the resubmitted job on another host.
void release_run_lock();

// Takes the lock file in this process; returns "" or why the directory is in use.
// On success *fd holds it; WriteError when the file cannot be created or
// written. Serial; RunLock calls it on rank 0.
std::string take_run_lock(const std::string& file, int* fd);

}  // namespace dipaco
