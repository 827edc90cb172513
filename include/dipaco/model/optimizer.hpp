// Inner optimizer: AdamW with decoupled weight decay (matrices only),
// linear warm-up then cosine decay, global-norm gradient clipping.
#pragma once
#include "dipaco/io/deck.hpp"
#include "dipaco/model/kernels.hpp"
#include "dipaco/model/model.hpp"

namespace dipaco {

struct Schedule {
  double peak, min_ratio;
  long warmup, total;
  double at(long step) const;  // learning rate for 0-based step
};

// Clips g in place to max_norm (0: no clip); returns the norm before clipping.
double clip_gradients(Kernels& k, float* g, size_t n, double max_norm);

// The arena's stretches of one weight decay (matrices decay, biases and norms
// do not), neighbours of the same decay merged.
std::vector<AdamwRun> adamw_runs(const ParamLayout& layout, float weight_decay);

// One AdamW step over a whole parameter arena; t is the 1-based step.
void adamw_step(Kernels& k, const ParamLayout& layout, float* params, const float* grads, float* m, float* v, long t,
                double lr, const Deck::Train& cfg);

}  // namespace dipaco
