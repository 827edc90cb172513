// Flash attention on the tensor cores, for train.precision = bf16: the same
// tiles, masks, stats and deterministic two-kernel backward as the fp32
// kernels (flash_attention_kernels.cuh, whose helpers this file uses), with
// every product of a tile pair a warp's 16x16 WMMA tiles (mma_tile: bf16
// operands, fp32 accumulation). Q, K, V and dO are rounded to bf16 as their
// tiles are loaded; P and dS are rounded to bf16 for the products that take
// them, while the softmax, its running max and sum, and every accumulator
// stay fp32 (in shared memory, where the online softmax rescales them).
//
// A block of 4 warps owns a tile of 64 rows; each warp 16 of them. Shared
// memory pitches are padded (bf16 rows by 8, fp32 rows by 4) so that WMMA's
// 32-byte aligned tiles land on other banks row to row.
#pragma once

namespace dipaco::cuda::flash {

constexpr int kTcWarps = 4, kTcThreads = 32 * kTcWarps, kTcRows = kTile / kTcWarps;  // 16 rows a warp

template <int DP>
struct TcPitch {
  static constexpr int h = DP + 8;      // bf16 rows of DP channels
  static constexpr int s = kTile + 4;   // fp32 rows of kTile scores
  static constexpr int p = kTile + 8;   // bf16 rows of kTile probabilities
  static constexpr int o = DP + 4;      // fp32 rows of DP channels
  static constexpr size_t H = size_t(kTile) * h * 2, S = size_t(kTile) * s * 4, P = size_t(kTile) * p * 2,
                          O = size_t(kTile) * o * 4;
};

// dst[r][d] (pitch ld, bf16) = src row row0 + r, channel d, rounded; zero past T rows and D channels.
template <int DP>
DIPACO_SIMT_INLINE void load_tile_bf16(bf16* dst, int ld, const float* src, long pitch, int row0, int T, int D) {
  for (int i = threadIdx.x; i < kTile * DP; i += kTcThreads) {
    const int r = i / DP, d = i % DP, t = row0 + r;
    dst[r * ld + d] = to_bf16(t < T && d < D ? src[size_t(t) * pitch + d] : 0.0f);
  }
}

template <int DP>
DIPACO_SIMT_INLINE void zero_rows(float* dst, int ld) {
  for (int i = threadIdx.x; i < kTile * DP; i += kTcThreads) dst[(i / DP) * ld + i % DP] = 0.0f;
}

// Byte offsets in shared memory, each a multiple of 32 (the pitches make every array one).
DIPACO_SIMT_INLINE char* carve(char*& at, size_t bytes) {
  char* p = at;
  at += bytes;
  return p;
}

template <int DP>
constexpr size_t tc_forward_smem() {
  using P = TcPitch<DP>;
  return 3 * P::H + P::S + P::P + P::O;
}

template <int DP>
__global__ void __launch_bounds__(kTcThreads) flash_forward_tc_kernel(float* out, float* stats, const float* qkv, int T,
                                                                      int H, int D, float scale) {
  using P = TcPitch<DP>;
  char* at = reinterpret_cast<char*>(dynamic_smem());
  bf16* Qh = reinterpret_cast<bf16*>(carve(at, P::H));
  bf16* Kh = reinterpret_cast<bf16*>(carve(at, P::H));
  bf16* Vh = reinterpret_cast<bf16*>(carve(at, P::H));
  float* S = reinterpret_cast<float*>(carve(at, P::S));
  bf16* Ph = reinterpret_cast<bf16*>(carve(at, P::P));
  float* O = reinterpret_cast<float*>(carve(at, P::O));
  const Tile t = tile_of(T, H, D, kTcRows);
  const int bh = t.bh, q0 = t.first, lane = t.lane, row0 = t.row0;
  const Head& hd = t.hd;
  const float* q = qkv + hd.qkv;
  load_tile_bf16<DP>(Qh, P::h, q, hd.C3, q0, T, D);
  zero_rows<DP>(O, P::o);
  float m[kTcRows], l[kTcRows];  // every lane holds its warp's rows' running max and sum
  for (int i = 0; i < kTcRows; ++i) m[i] = -INFINITY, l[i] = 0.0f;
  const int keys = min(T, q0 + kTile);
  for (int k0 = 0; k0 < keys; k0 += kTile) {
    __syncthreads();
    load_tile_bf16<DP>(Kh, P::h, q + hd.C, hd.C3, k0, T, D);
    load_tile_bf16<DP>(Vh, P::h, q + 2 * hd.C, hd.C3, k0, T, D);
    __syncthreads();
    for (int n = 0; n < kTile; n += 16)  // S = Q K^T, this warp's rows
      mma_tile<true>(S + row0 * P::s + n, P::s, Qh + row0 * P::h, P::h, Kh + n * P::h, P::h, DP, false);
    __syncwarp();
    for (int i = 0; i < kTcRows; ++i) {
      const int r = q0 + row0 + i, c = k0 + lane;
      const float* s = S + (row0 + i) * P::s;
      const float x0 = c <= r && c < T ? s[lane] * scale : -INFINITY;
      const float x1 = c + 32 <= r && c + 32 < T ? s[lane + 32] * scale : -INFINITY;
      const float m_new = fmaxf(m[i], warp_max(fmaxf(x0, x1)));
      const float corr = expf(m[i] - m_new);
      const float p0 = x0 == -INFINITY ? 0.0f : expf(x0 - m_new), p1 = x1 == -INFINITY ? 0.0f : expf(x1 - m_new);
      l[i] = l[i] * corr + warp_sum(p0 + p1), m[i] = m_new;
      Ph[(row0 + i) * P::p + lane] = to_bf16(p0), Ph[(row0 + i) * P::p + lane + 32] = to_bf16(p1);
      for (int d = lane; d < DP; d += 32) O[(row0 + i) * P::o + d] *= corr;
    }
    __syncwarp();
    for (int n = 0; n < DP; n += 16)  // O += P V
      mma_tile<false>(O + row0 * P::o + n, P::o, Ph + row0 * P::p, P::p, Vh + n, P::h, kTile, true);
    __syncwarp();
  }
  for (int i = 0; i < kTcRows; ++i) {
    const int r = q0 + row0 + i;
    if (r >= T) break;
    const float inv = 1.0f / l[i];
    float* o = out + hd.rows + size_t(r) * hd.C;
    for (int d = lane; d < D; d += 32) o[d] = O[(row0 + i) * P::o + d] * inv;
    if (lane == 0) stats[(size_t(bh) * T + r) * 2] = m[i], stats[(size_t(bh) * T + r) * 2 + 1] = inv;
  }
}

template <int DP>
constexpr size_t tc_backward_kv_smem() {
  using P = TcPitch<DP>;
  return 4 * P::H + 2 * P::S + 2 * P::P + 2 * P::O + 3 * kTile * sizeof(float);
}

// dK, dV of a tile of keys (rows of this block): S^T = K Q^T and dP^T = V dO^T
// per query tile, P^T and dS^T from them, dV += P^T dO, dK += dS^T Q.
template <int DP>
__global__ void __launch_bounds__(kTcThreads)
    flash_backward_kv_tc_kernel(float* dqkv, const float* dout, const float* qkv, const float* stats,
                                const float* rowdot, int T, int H, int D, float scale) {
  using P = TcPitch<DP>;
  char* at = reinterpret_cast<char*>(dynamic_smem());
  bf16* Kh = reinterpret_cast<bf16*>(carve(at, P::H));
  bf16* Vh = reinterpret_cast<bf16*>(carve(at, P::H));
  bf16* Qh = reinterpret_cast<bf16*>(carve(at, P::H));
  bf16* dOh = reinterpret_cast<bf16*>(carve(at, P::H));
  float* St = reinterpret_cast<float*>(carve(at, P::S));   // [key][query]
  float* dPt = reinterpret_cast<float*>(carve(at, P::S));  // [key][query]
  bf16* Pth = reinterpret_cast<bf16*>(carve(at, P::P));
  bf16* dSth = reinterpret_cast<bf16*>(carve(at, P::P));
  float* dK = reinterpret_cast<float*>(carve(at, P::O));
  float* dV = reinterpret_cast<float*>(carve(at, P::O));
  float* Ms = reinterpret_cast<float*>(carve(at, kTile * sizeof(float)));
  float* Is = Ms + kTile;
  float* Rs = Is + kTile;
  const Tile t = tile_of(T, H, D, kTcRows);
  const int bh = t.bh, k0 = t.first, lane = t.lane, row0 = t.row0;
  const Head& hd = t.hd;
  const float* q = qkv + hd.qkv;
  const float* dy = dout + hd.rows;
  load_tile_bf16<DP>(Kh, P::h, q + hd.C, hd.C3, k0, T, D);
  load_tile_bf16<DP>(Vh, P::h, q + 2 * hd.C, hd.C3, k0, T, D);
  zero_rows<DP>(dK, P::o);
  zero_rows<DP>(dV, P::o);
  for (int q0 = k0; q0 < T; q0 += kTile) {
    __syncthreads();
    load_tile_bf16<DP>(Qh, P::h, q, hd.C3, q0, T, D);
    load_tile_bf16<DP>(dOh, P::h, dy, hd.C, q0, T, D);
    load_row_stats(Ms, Is, Rs, stats, rowdot, bh, q0, T, kTcThreads);
    __syncthreads();
    for (int n = 0; n < kTile; n += 16) {
      mma_tile<true>(St + row0 * P::s + n, P::s, Kh + row0 * P::h, P::h, Qh + n * P::h, P::h, DP, false);
      mma_tile<true>(dPt + row0 * P::s + n, P::s, Vh + row0 * P::h, P::h, dOh + n * P::h, P::h, DP, false);
    }
    __syncwarp();
    for (int i = 0; i < kTcRows; ++i) {
      const int c = k0 + row0 + i;
      for (int col = lane; col < kTile; col += 32) {
        const float p = visible(q0 + col, c, T) ? expf(St[(row0 + i) * P::s + col] * scale - Ms[col]) * Is[col] : 0.0f;
        Pth[(row0 + i) * P::p + col] = to_bf16(p);
        dSth[(row0 + i) * P::p + col] = to_bf16(scale * p * (dPt[(row0 + i) * P::s + col] - Rs[col]));
      }
    }
    __syncwarp();
    for (int n = 0; n < DP; n += 16) {
      mma_tile<false>(dV + row0 * P::o + n, P::o, Pth + row0 * P::p, P::p, dOh + n, P::h, kTile, true);
      mma_tile<false>(dK + row0 * P::o + n, P::o, dSth + row0 * P::p, P::p, Qh + n, P::h, kTile, true);
    }
    __syncwarp();
  }
  for (int i = 0; i < kTcRows; ++i) {
    const int c = k0 + row0 + i;
    if (c >= T) break;
    float* g = dqkv + hd.qkv + size_t(c) * hd.C3;
    for (int d = lane; d < D; d += 32) g[hd.C + d] = dK[(row0 + i) * P::o + d], g[2 * hd.C + d] = dV[(row0 + i) * P::o + d];
  }
}

template <int DP>
constexpr size_t tc_backward_q_smem() {
  using P = TcPitch<DP>;
  return 4 * P::H + 2 * P::S + P::P + P::O;
}

// dQ of a tile of queries: S = Q K^T and dP = dO V^T per key tile, dS from
// them, dQ += dS K.
template <int DP>
__global__ void __launch_bounds__(kTcThreads)
    flash_backward_q_tc_kernel(float* dqkv, const float* dout, const float* qkv, const float* stats,
                               const float* rowdot, int T, int H, int D, float scale) {
  using P = TcPitch<DP>;
  char* at = reinterpret_cast<char*>(dynamic_smem());
  bf16* Qh = reinterpret_cast<bf16*>(carve(at, P::H));
  bf16* dOh = reinterpret_cast<bf16*>(carve(at, P::H));
  bf16* Kh = reinterpret_cast<bf16*>(carve(at, P::H));
  bf16* Vh = reinterpret_cast<bf16*>(carve(at, P::H));
  float* S = reinterpret_cast<float*>(carve(at, P::S));
  float* dP = reinterpret_cast<float*>(carve(at, P::S));
  bf16* dSh = reinterpret_cast<bf16*>(carve(at, P::P));
  float* dQ = reinterpret_cast<float*>(carve(at, P::O));
  const Tile t = tile_of(T, H, D, kTcRows);
  const int bh = t.bh, q0 = t.first, lane = t.lane, row0 = t.row0;
  const Head& hd = t.hd;
  const float* q = qkv + hd.qkv;
  load_tile_bf16<DP>(Qh, P::h, q, hd.C3, q0, T, D);
  load_tile_bf16<DP>(dOh, P::h, dout + hd.rows, hd.C, q0, T, D);
  zero_rows<DP>(dQ, P::o);
  float mi[kTcRows], ii[kTcRows], ri[kTcRows];
  for (int i = 0; i < kTcRows; ++i) {
    const size_t r = size_t(bh) * T + min(q0 + row0 + i, T - 1);
    mi[i] = stats[2 * r], ii[i] = stats[2 * r + 1], ri[i] = rowdot[r];
  }
  const int keys = min(T, q0 + kTile);
  for (int k0 = 0; k0 < keys; k0 += kTile) {
    __syncthreads();
    load_tile_bf16<DP>(Kh, P::h, q + hd.C, hd.C3, k0, T, D);
    load_tile_bf16<DP>(Vh, P::h, q + 2 * hd.C, hd.C3, k0, T, D);
    __syncthreads();
    for (int n = 0; n < kTile; n += 16) {
      mma_tile<true>(S + row0 * P::s + n, P::s, Qh + row0 * P::h, P::h, Kh + n * P::h, P::h, DP, false);
      mma_tile<true>(dP + row0 * P::s + n, P::s, dOh + row0 * P::h, P::h, Vh + n * P::h, P::h, DP, false);
    }
    __syncwarp();
    for (int i = 0; i < kTcRows; ++i) {
      const int r = q0 + row0 + i;
      for (int col = lane; col < kTile; col += 32) {
        const float p = visible(r, k0 + col, T) ? expf(S[(row0 + i) * P::s + col] * scale - mi[i]) * ii[i] : 0.0f;
        dSh[(row0 + i) * P::p + col] = to_bf16(scale * p * (dP[(row0 + i) * P::s + col] - ri[i]));
      }
    }
    __syncwarp();
    for (int n = 0; n < DP; n += 16)
      mma_tile<false>(dQ + row0 * P::o + n, P::o, dSh + row0 * P::p, P::p, Kh + n, P::h, kTile, true);
    __syncwarp();
  }
  for (int i = 0; i < kTcRows; ++i) {
    const int r = q0 + row0 + i;
    if (r >= T) break;
    float* g = dqkv + hd.qkv + size_t(r) * hd.C3;
    for (int d = lane; d < D; d += 32) g[d] = dQ[(row0 + i) * P::o + d];
  }
}

}  // namespace dipaco::cuda::flash
