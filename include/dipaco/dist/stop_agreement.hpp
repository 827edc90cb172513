// Agreeing to stop (a signal, run.max_hours) without a blocking world meeting
// between outer rounds. Every rank posts a non-blocking MAX all-reduce of its
// stop request at the end of every chunk of steps (the same steps on every
// rank, so the same sequence of posts) and tests the earlier ones. The first
// request that comes back positive is the same on every rank; each rank, when
// it sees it, meets the others once more (a blocking MAX of the steps they
// are at, on a second communicator), and all of them stop at that step: the
// fastest rank's, which no rank has passed since none passes a round boundary
// alone. A stop thus costs about one chunk of the slowest path, not a round.
#pragma once
#include <mpi.h>

#include <deque>
#include <vector>

#include "dipaco/dist/signals.hpp"

namespace dipaco {

class StopAgreement {
 public:
  explicit StopAgreement(MPI_Comm world);
  ~StopAgreement();
  StopAgreement(const StopAgreement&) = delete;
  StopAgreement& operator=(const StopAgreement&) = delete;

  // At the end of a chunk: posts this rank's request and tests the earlier
  // posts. Returns the step every rank stops at, once known (-1 before).
  long poll(StopRequest request, long step);
  // At a round boundary: completes every post (every rank has made the same
  // ones by now). Returns the step to stop at (this one) or -1.
  long drain(long step);
  StopRequest agreed() const { return StopRequest::from_code(code_); }  // none before the agreement

 private:
  long agree(long step);

  MPI_Comm posts_ = MPI_COMM_NULL, steps_ = MPI_COMM_NULL;
  std::deque<int> values_;  // one per post, in place (a deque keeps their addresses)
  std::vector<MPI_Request> requests_;
  size_t tested_ = 0;  // posts known complete (in order)
  long posted_ = 0;
  int code_ = 0;  // StopRequest::code() of the agreed request
  long stop_step_ = -1;
};

}  // namespace dipaco
