// What one path owns on a rank: its parameter arena (all groups, including its
// local copies of shared modules), AdamW moments, step, and its data shard.
#pragma once
#include <vector>

#include "dipaco/data/corpus.hpp"
#include "dipaco/model/kernels.hpp"
#include "dipaco/train/divergence.hpp"

namespace dipaco {

struct PathState {
  int id = 0;
  std::vector<int> modules;  // module index per level
  DeviceBuffer<float> params, m, v;
  DeviceBuffer<float> outer_error;  // lossy outer_dtype with error feedback: residuals not yet sent (arena-sized)
  long step = 0;             // inner steps done (also the data cursor)
  double shard_bytes = 0;    // size of its training shard in bytes (tokens), the DiLoCo weight
  TokenStream train, val;
  std::vector<size_t> val_starts;
  DivergenceCheck check;  // its losses' running mean
  long diverged = 0;      // divergence events since its last outer round
  bool reset = false;     // went back to the anchors while a round was in flight
};

}  // namespace dipaco
