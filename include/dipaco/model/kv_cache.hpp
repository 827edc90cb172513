// Incremental decoding with a key/value cache: each new byte costs one
// position (its query against the cached keys and values of the positions
// before it), not a forward pass over the whole window. The same transformer
// as Model::forward (model.hpp), on the CPU, fp32.
//
// Positions are learned embeddings, so a window cannot slide one byte at a
// time under a cache (every cached position would move). When the window is
// full, the caller refills the cache with the last bytes (generate keeps the
// last half of the context), and from then on positions count from there.
#pragma once
#include <memory>
#include <vector>

#include "dipaco/model/kernels.hpp"
#include "dipaco/model/model.hpp"

namespace dipaco {

class KvDecoder {
 public:
  // params: one path's arena (make_layout(s) order), copied.
  KvDecoder(const ModelShape& s, const std::vector<float>& params);
  // Empties the cache: the next byte is at position 0.
  void reset() { pos_ = 0; }
  int position() const { return pos_; }
  bool full() const { return pos_ >= s_.T; }
  // Feeds `token` at the next position; returns the probabilities of the byte after it [V].
  // Refused (std::logic_error) when the cache is full.
  const std::vector<float>& step(int token);
  // reset(), then step() over every byte of `window` (at most T); the probabilities after the last.
  const std::vector<float>& prefill(const std::vector<int>& window);
  const ModelShape& shape() const { return s_; }

 private:
  void block_step(int l, float* x);
  void attend(int l, const float* q, float* y) const;

  std::unique_ptr<Kernels> k_;
  ModelShape s_;
  ParamLayout layout_;
  std::vector<float> params_;
  std::vector<float> kcache_, vcache_;  // [L, T, C]
  std::vector<float> x_, ln_, mean_, rstd_, qkv_, y_, fc_, fcg_, logits_, probs_;
  int pos_ = 0;
};

}  // namespace dipaco
