#include "dipaco/model/layers.hpp"

#include <cmath>

namespace dipaco {

void linear_forward(Kernels& k, float* out, const float* inp, const float* W, const float* b, int N, int I, int O,
                    Precision p, bool accumulate) {
  GemmShape s;
  s.M = N, s.N = O, s.K = I, s.accumulate = accumulate, s.precision = p;
  k.gemm(s, inp, W, out, b);
}

void linear_backward(Kernels& k, float* dinp, float* dW, float* db, const float* dout, const float* inp, const float* W,
                     int N, int I, int O, Precision p) {
  if (dinp) {
    GemmShape s;  // [N,O] * [I,O]^T
    s.M = N, s.N = I, s.K = O, s.trans_b = true, s.precision = p;
    k.gemm(s, dout, W, dinp, nullptr);
  }
  GemmShape s;  // [N,I]^T * [N,O]
  s.M = I, s.N = O, s.K = N, s.trans_a = true, s.accumulate = true, s.precision = p;
  k.gemm(s, inp, dout, dW, nullptr);
  if (db) k.bias_backward(db, dout, N, O);
}

namespace {
GemmShape batched(int BH, int M, int N, int K, bool ta, bool tb, Precision p) {
  GemmShape s;
  s.batch = BH, s.M = M, s.N = N, s.K = K, s.trans_a = ta, s.trans_b = tb, s.precision = p;
  s.stride_a = long(M) * K, s.stride_b = long(K) * N, s.stride_c = long(M) * N;
  return s;
}
}  // namespace

void attention_forward(Kernels& k, float* out, const AttentionSaved& s, const float* qkv, int B, int T, int H, int D,
                       Precision p) {
  const int BH = B * H;
  k.split_heads(s.q, s.k, s.v, qkv, B, T, H, D);
  // scores = q k^T, kept in att and turned into probabilities in place.
  k.gemm(batched(BH, T, T, D, false, true, p), s.q, s.k, s.att, nullptr);
  k.causal_softmax_forward(s.att, s.att, BH, T, 1.0f / std::sqrt(float(D)));
  k.gemm(batched(BH, T, D, T, false, false, p), s.att, s.v, s.y, nullptr);
  k.merge_heads(out, s.y, B, T, H, D);
}

void attention_backward(Kernels& k, float* dqkv, const float* dout, const AttentionSaved& s, float* scratch, int B,
                        int T, int H, int D, Precision p) {
  const int BH = B * H;
  const size_t n = size_t(BH) * T * D;
  float *dq = scratch, *dk = dq + n, *dv = dk + n, *datt = dv + n, *dscores = datt + size_t(BH) * T * T;
  float* dy = dq;  // dq is written only after dy is consumed
  k.merge_heads_backward(dy, dout, B, T, H, D);
  k.gemm(batched(BH, T, T, D, false, true, p), dy, s.v, datt, nullptr);   // datt = dy v^T
  k.gemm(batched(BH, T, D, T, true, false, p), s.att, dy, dv, nullptr);   // dv = att^T dy
  k.causal_softmax_backward(dscores, datt, s.att, BH, T, 1.0f / std::sqrt(float(D)));
  k.gemm(batched(BH, T, D, T, false, false, p), dscores, s.k, dq, nullptr);  // dq = ds k
  k.gemm(batched(BH, T, D, T, true, false, p), dscores, s.q, dk, nullptr);   // dk = ds^T q
  k.split_heads_backward(dqkv, dq, dk, dv, B, T, H, D);
}

}  // namespace dipaco
