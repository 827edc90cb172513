#include "dipaco/model/kv_cache.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "dipaco/model/layers.hpp"

namespace dipaco {

KvDecoder::KvDecoder(const ModelShape& s, const std::vector<float>& params)
    : k_(make_cpu_kernels()), s_(s), layout_(make_layout(s)), params_(params) {
  if (params_.size() != layout_.total) throw std::invalid_argument("KvDecoder: parameter count does not match the shape");
  const size_t C = s.C;
  kcache_.assign(size_t(s.L) * s.T * C, 0.0f);
  vcache_.assign(kcache_.size(), 0.0f);
  x_.resize(C), ln_.resize(C), mean_.resize(1), rstd_.resize(1), qkv_.resize(3 * C), y_.resize(C);
  fc_.resize(4 * C), fcg_.resize(4 * C), logits_.resize(s.V), probs_.resize(s.V);
}

// One query (position pos_) against the cached keys 0..pos_ of layer l, per head.
void KvDecoder::attend(int l, const float* q, float* y) const {
  const int C = s_.C, H = s_.H, D = C / H, n = pos_ + 1;
  const float scale = 1.0f / std::sqrt(float(D));
  const float* K = &kcache_[size_t(l) * s_.T * C];
  const float* V = &vcache_[size_t(l) * s_.T * C];
  std::vector<float> att(n);
  for (int h = 0; h < H; ++h) {
    float top = -INFINITY;
    for (int j = 0; j < n; ++j) {
      float dot = 0;
      for (int d = 0; d < D; ++d) dot += q[h * D + d] * K[size_t(j) * C + h * D + d];
      att[j] = dot * scale;
      top = std::max(top, att[j]);
    }
    float sum = 0;
    for (int j = 0; j < n; ++j) sum += (att[j] = std::exp(att[j] - top));
    for (int d = 0; d < D; ++d) y[h * D + d] = 0;
    for (int j = 0; j < n; ++j) {
      const float w = att[j] / sum;
      for (int d = 0; d < D; ++d) y[h * D + d] += w * V[size_t(j) * C + h * D + d];
    }
  }
}

// x (the residual stream at pos_) through block l; its key and value join the cache.
void KvDecoder::block_step(int l, float* x) {
  const int C = s_.C;
  const ParamGroup* g = nullptr;
  for (const auto& gr : layout_.groups)
    if (gr.level >= 0 && l >= gr.first_block && l < gr.first_block + gr.n_blocks) g = &gr;
  const float* w = params_.data() + g->offset + size_t(l - g->first_block) * layout_.block_size;
  auto take = [&](size_t n) {
    const float* r = w;
    w += n;
    return r;
  };
  const float *ln1w = take(C), *ln1b = take(C), *qkvw = take(3 * C * C), *qkvb = take(3 * C);
  const float *projw = take(C * C), *projb = take(C), *ln2w = take(C), *ln2b = take(C);
  const float *fcw = take(4 * C * C), *fcb = take(4 * C), *fc2w = take(4 * C * C), *fc2b = take(C);
  Kernels& k = *k_;
  k.layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), x, ln1w, ln1b, 1, C);
  linear_forward(k, qkv_.data(), ln_.data(), qkvw, qkvb, 1, C, 3 * C, Precision::fp32);
  // qkv is [3, H, D]: q, then k, then v, each C wide.
  std::copy(qkv_.begin() + C, qkv_.begin() + 2 * C, kcache_.begin() + (size_t(l) * s_.T + pos_) * C);
  std::copy(qkv_.begin() + 2 * C, qkv_.end(), vcache_.begin() + (size_t(l) * s_.T + pos_) * C);
  attend(l, qkv_.data(), y_.data());
  linear_forward(k, x, y_.data(), projw, projb, 1, C, C, Precision::fp32, true);
  k.layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), x, ln2w, ln2b, 1, C);
  linear_forward(k, fc_.data(), ln_.data(), fcw, fcb, 1, C, 4 * C, Precision::fp32);
  k.gelu_forward(fcg_.data(), fc_.data(), fc_.size());
  linear_forward(k, x, fcg_.data(), fc2w, fc2b, 1, 4 * C, C, Precision::fp32, true);
}

const std::vector<float>& KvDecoder::step(int token) {
  if (full()) throw std::logic_error("KvDecoder: the cache holds a whole context; refill it");
  if (token < 0 || token >= s_.V) throw std::out_of_range("KvDecoder: token out of the vocabulary");
  const int C = s_.C;
  const float* wte = params_.data() + layout_.groups[0].offset;
  const float* wpe = wte + size_t(s_.V) * C;
  const float* lnfw = wpe + size_t(s_.T) * C;
  for (int c = 0; c < C; ++c) x_[c] = wte[size_t(token) * C + c] + wpe[size_t(pos_) * C + c];
  for (int l = 0; l < s_.L; ++l) block_step(l, x_.data());
  k_->layernorm_forward(ln_.data(), mean_.data(), rstd_.data(), x_.data(), lnfw, lnfw + C, 1, C);
  GemmShape g;  // logits = lnf * wte^T, the tied head
  g.M = 1, g.N = s_.V, g.K = C, g.trans_b = true;
  k_->gemm(g, ln_.data(), wte, logits_.data(), nullptr);
  const float top = *std::max_element(logits_.begin(), logits_.end());
  double sum = 0;
  for (int v = 0; v < s_.V; ++v) sum += (probs_[v] = std::exp(logits_[v] - top));
  for (int v = 0; v < s_.V; ++v) probs_[v] = float(probs_[v] / sum);
  ++pos_;
  return probs_;
}

const std::vector<float>& KvDecoder::prefill(const std::vector<int>& window) {
  if (window.empty() || window.size() > size_t(s_.T)) throw std::invalid_argument("KvDecoder: prefill needs 1..T bytes");
  reset();
  for (int t : window) step(t);
  return probs_;
}

}  // namespace dipaco
