#include "dipaco/dist/stop_agreement.hpp"

#include <algorithm>

#include "dipaco/dist/watchdog.hpp"

namespace dipaco {

StopAgreement::StopAgreement(MPI_Comm world) {
  watched("creating the stop communicators", [&] {
    MPI_Comm_dup(world, &posts_);
    MPI_Comm_dup(world, &steps_);
  });
  MPI_Comm_set_name(posts_, "dipaco stop");  // named for profiling tools (tests/integration/collectives.sh)
  MPI_Comm_set_name(steps_, "dipaco stop");
}

StopAgreement::~StopAgreement() {
  // Posts still open (an error unwinding) complete or die with the job; freeing is legal either way.
  if (posts_ != MPI_COMM_NULL) MPI_Comm_free(&posts_);
  if (steps_ != MPI_COMM_NULL) MPI_Comm_free(&steps_);
}

long StopAgreement::poll(StopRequest request, long step) {
  if (stop_step_ >= 0) return stop_step_;
  values_.push_back(request.code());
  requests_.emplace_back();
  MPI_Iallreduce(MPI_IN_PLACE, &values_.back(), 1, MPI_INT, MPI_MAX, posts_, &requests_.back());
  ++posted_;
  while (tested_ < requests_.size()) {
    int done = 0;
    MPI_Test(&requests_[tested_], &done, MPI_STATUS_IGNORE);
    if (!done) break;
    if (values_[tested_++] > 0) return agree(step);
  }
  return -1;
}

long StopAgreement::drain(long step) {
  if (stop_step_ >= 0) return stop_step_;
  {
    CollectiveScope wait("completing the stop requests");
    MPI_Waitall(int(requests_.size() - tested_), requests_.data() + tested_, MPI_STATUSES_IGNORE);
  }
  for (; tested_ < requests_.size(); ++tested_)
    if (values_[tested_] > 0) {
      ++tested_;
      return agree(step);
    }
  requests_.clear();
  values_.clear();
  tested_ = 0;
  return -1;
}

// The first positive post: every rank gets here once, at the step it is at.
long StopAgreement::agree(long step) {
  code_ = values_[tested_ - 1];
  long mine[2] = {step, posted_}, all[2];
  {
    CollectiveScope wait("agreeing on the stop step");
    MPI_Allreduce(mine, all, 2, MPI_LONG, MPI_MAX, steps_);
  }
  // Make every rank's posts match the most any rank made, then complete them all.
  for (; posted_ < all[1]; ++posted_) {
    values_.push_back(0);
    requests_.emplace_back();
    MPI_Iallreduce(MPI_IN_PLACE, &values_.back(), 1, MPI_INT, MPI_MAX, posts_, &requests_.back());
  }
  {
    CollectiveScope wait("completing the stop requests");
    MPI_Waitall(int(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
  }
  for (int v : values_) code_ = std::max(code_, v);
  requests_.clear();
  values_.clear();
  tested_ = 0;
  stop_step_ = all[0];
  return stop_step_;
}

}  // namespace dipaco
