#include "dipaco/train/divergence.hpp"

#include <cmath>
#include <cstdio>

namespace dipaco {

std::string show_value(double v) {
  if (std::isnan(v)) return "nan";  // not "-nan"
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string DivergenceCheck::verdict(double loss, double grad_norm) const {
  if (!std::isfinite(loss)) return "loss " + show_value(loss);
  if (!std::isfinite(grad_norm)) return "gradient norm " + show_value(grad_norm);
  // A share of 0 (a rank given no sequences this step) says nothing.
  if (factor_ > 0 && seen_ >= kWarmSteps && mean_ > 0 && loss > factor_ * mean_)
    return "loss " + show_value(loss) + " above " + show_value(factor_) + " x its running mean " + show_value(mean_) +
           " (train.diverge_factor)";
  return "";
}

void DivergenceCheck::accept(double loss) {
  mean_ = seen_ == 0 ? loss : (1 - kDecay) * mean_ + kDecay * loss;
  ++seen_;
}

}  // namespace dipaco
