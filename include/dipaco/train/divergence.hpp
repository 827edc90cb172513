// A path's training diverging: a loss or gradient norm that is not finite, or
// a loss above train.diverge_factor times its running mean, seen on the step
// it happens. A DiPaCo path goes back to its anchors, skips the batch and is
// left out of its next outer round; past train.diverge_limit such events (or
// on a path with no anchors to go back to: a dense run, a warm start, private
// levels) the job ends with kExitDiverged. Non-finite values are also refused
// where they would be kept: outer sums, anchors, checkpoints, evaluations.
#pragma once
#include <stdexcept>
#include <string>

namespace dipaco {

// Ends the job with kExitDiverged (cmd/app.hpp).
struct DivergedError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One path's (one replica's) view of its own losses.
class DivergenceCheck {
 public:
  explicit DivergenceCheck(double factor = 0) : factor_(factor) {}
  // Why this step diverged ("" when it did not); loss is this rank's share.
  std::string verdict(double loss, double grad_norm) const;
  // A step that did not diverge: its loss joins the running mean.
  void accept(double loss);
  double mean() const { return mean_; }

  // Steps whose loss is known before the running mean is trusted.
  static constexpr long kWarmSteps = 1;
  // The running mean's weight on the newest loss.
  static constexpr double kDecay = 0.1;

 private:
  double factor_;
  double mean_ = 0;
  long seen_ = 0;
};

// "3.2" or "nan": a value as a message shows it.
std::string show_value(double v);

}  // namespace dipaco
