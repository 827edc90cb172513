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

void adamw_step(Kernels& k, const ParamLayout& layout, float* params, const float* grads, float* m, float* v, long t,
                double lr, const Deck::Train& cfg) {
  for (const auto& group : layout.groups)
    for (const auto& view : group.views) {
      size_t off = group.offset + view.offset;
      k.adamw(params + off, grads + off, m + off, v + off, view.size(), float(lr), float(cfg.beta1), float(cfg.beta2),
              float(cfg.eps), view.decay ? float(cfg.weight_decay) : 0.0f, t);
    }
}

}  // namespace dipaco
