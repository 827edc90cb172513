#include "dipaco/model/optimizer.hpp"

#include <cmath>

namespace dipaco {

double Schedule::at(long step) const {
  if (warmup > 0 && step < warmup) return peak * double(step + 1) / double(warmup);
  if (total <= warmup) return peak;
  double progress = std::min(1.0, double(step - warmup) / double(total - warmup));
  double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return peak * (min_ratio + (1.0 - min_ratio) * cosine);
}

double clip_gradients(Kernels& k, float* g, size_t n, double max_norm) {
  double norm = std::sqrt(k.sum_squares(g, n));
  if (max_norm > 0 && norm > max_norm) k.scale(g, float(max_norm / (norm + 1e-6)), n);
  return norm;
}

std::vector<AdamwRun> adamw_runs(const ParamLayout& layout, float weight_decay) {
  std::vector<AdamwRun> runs;
  for (const auto& group : layout.groups)
    for (const auto& view : group.views) {
      const AdamwRun r{group.offset + view.offset, view.size(), view.decay ? weight_decay : 0.0f};
      if (!runs.empty() && runs.back().offset + runs.back().size == r.offset &&
          runs.back().weight_decay == r.weight_decay)
        runs.back().size += r.size;
      else
        runs.push_back(r);
    }
  return runs;
}

void adamw_step(Kernels& k, const ParamLayout& layout, float* params, const float* grads, float* m, float* v, long t,
                double lr, const Deck::Train& cfg) {
  k.adamw_runs(params, grads, m, v, adamw_runs(layout, float(cfg.weight_decay)), float(lr), float(cfg.beta1),
               float(cfg.beta2), float(cfg.eps), t);
}

}  // namespace dipaco
