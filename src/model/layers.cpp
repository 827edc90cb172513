#include "dipaco/model/layers.hpp"

#include <algorithm>
#include <cmath>

namespace dipaco {

void linear_forward(Kernels& k, float* out, const float* inp, const float* W, const float* b, int N, int I, int O,
                    Precision p, bool accumulate, const Bf16Copies& copies) {
  GemmShape s;
  s.M = N, s.N = O, s.K = I, s.accumulate = accumulate, s.precision = p;
  if (p == Precision::bf16) s.a_bf16 = copies.inp, s.b_bf16 = copies.W;
  k.gemm(s, inp, W, out, b);
}

void linear_backward(Kernels& k, float* dinp, float* dW, float* db, const float* dout, const float* inp, const float* W,
                     int N, int I, int O, Precision p, const Bf16Copies& copies) {
  const bool bf16 = p == Precision::bf16;
  const uint16_t* dout16 = nullptr;
  if (bf16 && copies.dout_scratch) k.to_bf16(copies.dout_scratch, dout, size_t(N) * O), dout16 = copies.dout_scratch;
  if (dinp) {
    GemmShape s;  // [N,O] * [I,O]^T
    s.M = N, s.N = I, s.K = O, s.trans_b = true, s.precision = p;
    if (bf16) s.a_bf16 = dout16, s.b_bf16 = copies.W;
    k.gemm(s, dout, W, dinp, nullptr);
  }
  GemmShape s;  // [N,I]^T * [N,O]
  s.M = I, s.N = O, s.K = N, s.trans_a = true, s.accumulate = true, s.precision = p;
  if (bf16) s.a_bf16 = copies.inp, s.b_bf16 = dout16;
  k.gemm(s, inp, dout, dW, nullptr);
  if (db) k.bias_backward(db, dout, N, O);
}

namespace {

// How a per-head matrix sits in memory: row pitch, and the distance between
// heads and between sequences of the batch.
struct HeadView {
  long ld, head, seq;
};

// One matmul per (sequence, head): op(A) [M,K] * op(B) [K,N] -> C [M,N].
GemmShape per_head(int B, int H, int M, int N, int K, HeadView a, bool ta, HeadView b, bool tb, HeadView c, Precision p,
                   bool accumulate = false) {
  GemmShape s;
  s.batch2 = B, s.batch = H, s.M = M, s.N = N, s.K = K, s.trans_a = ta, s.trans_b = tb;
  s.ld_a = a.ld, s.stride_a = a.head, s.stride2_a = a.seq;
  s.ld_b = b.ld, s.stride_b = b.head, s.stride2_b = b.seq;
  s.ld_c = c.ld, s.stride_c = c.head, s.stride2_c = c.seq;
  s.accumulate = accumulate, s.precision = p;
  return s;
}

// Whether attention goes to the kernels' fused attention: its row stats (two floats
// a row) fit the att buffer callers size B*H*T*T from T = 2 on.
bool fused(bool fused_kernels, int T) { return fused_kernels && T >= 2; }

struct Views {
  HeadView qkv, rows, att;  // q/k/v heads in [B,T,3C]; heads in [B,T,C]; [B,H,T,T]
  int block;
  Views(Kernels& k, int T, int H, int D, int block_rows, Precision p) {
    const long C = long(H) * D;
    qkv = {3 * C, D, T * 3 * C}, rows = {C, D, T * C}, att = {T, long(T) * T, long(H) * T * T};
    block = block_rows > 0 ? block_rows : k.causal_block_rows(T, p);
    block = std::max(1, std::min(block, T));
  }
};

}  // namespace

// Queries [r0, r1) attend to keys [0, r1) only: each block multiplies its part
// of the causal triangle, never the masked rest. Keys' gradients gather over the
// blocks, so blocks run last to first: the last one (r1 = T) writes every key
// row and the earlier ones accumulate.
void attention_forward(Kernels& k, float* out, float* att, const float* qkv, int B, int T, int H, int D, Precision p,
                       int block_rows) {
  if (block_rows == 0 && fused(k.has_fused_attention(D), T))
    return k.fused_attention_forward(out, att, qkv, B, T, H, D, 1.0f / std::sqrt(float(D)), p);
  const Views v(k, T, H, D, block_rows, p);
  const long C = long(H) * D, C3 = 3 * C;
  const float *q = qkv, *kk = qkv + C, *vv = qkv + 2 * C;
  for (int r0 = 0; r0 < T; r0 += v.block) {
    const int r1 = std::min(T, r0 + v.block);
    k.gemm(per_head(B, H, r1 - r0, r1, D, v.qkv, false, v.qkv, true, v.att, p), q + r0 * C3, kk, att + long(r0) * T,
           nullptr);
  }
  k.causal_softmax_forward(att, att, B * H, T, 1.0f / std::sqrt(float(D)));
  for (int r0 = 0; r0 < T; r0 += v.block) {
    const int r1 = std::min(T, r0 + v.block);
    k.gemm(per_head(B, H, r1 - r0, D, r1, v.att, false, v.qkv, false, v.rows, p), att + long(r0) * T, vv, out + r0 * C,
           nullptr);
  }
}

void attention_backward(Kernels& k, float* dqkv, const float* dout, const float* qkv, const float* out, const float* att,
                        float* scratch, int B, int T, int H, int D, Precision p, int block_rows) {
  if (block_rows == 0 && fused(k.has_fused_attention(D), T))
    return k.fused_attention_backward(dqkv, dout, qkv, out, att, B, T, H, D, 1.0f / std::sqrt(float(D)), p);
  const Views v(k, T, H, D, block_rows, p);
  const long C = long(H) * D, C3 = 3 * C;
  const float *q = qkv, *kk = qkv + C, *vv = qkv + 2 * C;
  float *dq = dqkv, *dk = dqkv + C, *dv = dqkv + 2 * C;
  float *datt = scratch, *dscores = datt + size_t(B) * H * T * T;
  const int last = (T - 1) / v.block * v.block;
  for (int r0 = last; r0 >= 0; r0 -= v.block) {
    const int r1 = std::min(T, r0 + v.block), m = r1 - r0;
    const bool acc = r0 != last;
    // datt = dy v^T; dv (+)= att^T dy
    k.gemm(per_head(B, H, m, r1, D, v.rows, false, v.qkv, true, v.att, p), dout + r0 * C, vv, datt + long(r0) * T,
           nullptr);
    k.gemm(per_head(B, H, r1, D, m, v.att, true, v.rows, false, v.qkv, p, acc), att + long(r0) * T, dout + r0 * C, dv,
           nullptr);
  }
  k.causal_softmax_backward(dscores, datt, att, B * H, T, 1.0f / std::sqrt(float(D)));
  for (int r0 = last; r0 >= 0; r0 -= v.block) {
    const int r1 = std::min(T, r0 + v.block), m = r1 - r0;
    const bool acc = r0 != last;
    // dq = ds k; dk (+)= ds^T q
    k.gemm(per_head(B, H, m, D, r1, v.att, false, v.qkv, false, v.qkv, p), dscores + long(r0) * T, kk, dq + r0 * C3,
           nullptr);
    k.gemm(per_head(B, H, r1, D, m, v.att, true, v.qkv, false, v.qkv, p, acc), dscores + long(r0) * T, q + r0 * C3, dk,
           nullptr);
  }
}

size_t attention_saved_floats(bool fused_kernels, int B, int H, int T) {
  return fused(fused_kernels, T) ? 2 * size_t(B) * H * T : size_t(B) * H * T * T;
}
size_t attention_scratch_floats(bool fused_kernels, int B, int H, int T) {
  return fused(fused_kernels, T) ? 0 : 2 * size_t(B) * H * T * T;
}

}  // namespace dipaco
