// The flash attention kernels (flash_attention.cuh) as device code that
// compiles two ways: for the GPU under nvcc (simt.cuh: CUDA's own built-ins),
// and for the host under the block emulator of the unit tests
// (tests/unit/simt_host.hpp: a thread per CUDA thread, barriers for
// __syncthreads and __syncwarp, a shared buffer for the shuffles), so that
// their indexing, masks and synchronisation are checked on machines without a
// GPU. The includer provides those primitives before including this file.
//
// A block of 8 warps owns one tile of 64 rows (queries in the forward and in
// dQ, keys in dK/dV) of one (sequence, head); each warp owns 8 of its rows and
// each lane 2 of the 64 columns of the other side, so a row's softmax terms
// are warp reductions. Tiles live in shared memory, zero-padded to DP channels
// (the head size rounded up to 32, 64 or 128). Operands a lane reads across
// its own column are stored with a pitch of DP + 1, which spreads the lanes
// over the 32 banks; operands every lane reads at the same address are
// broadcasts and keep the pitch DP (and float4 reads).
#pragma once

namespace dipaco::cuda::flash {


constexpr int kTile = 64, kWarps = 8, kThreads = 32 * kWarps, kRowsPerWarp = kTile / kWarps;
constexpr unsigned kFull = 0xffffffffu;

DIPACO_SIMT_INLINE float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
DIPACO_SIMT_INLINE float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// dst[r][d] (pitch ld) = src row row0 + r, channel d; zero past T rows and D channels.
template <int DP>
DIPACO_SIMT_INLINE void load_tile(float* dst, int ld, const float* src, long pitch, int row0, int T, int D) {
  for (int i = threadIdx.x; i < kTile * DP; i += kThreads) {
    const int r = i / DP, d = i % DP, t = row0 + r;
    dst[r * ld + d] = t < T && d < D ? src[size_t(t) * pitch + d] : 0.0f;
  }
}

// Query row r sees key c when c <= r; rows and keys past T see nothing.
DIPACO_SIMT_INLINE bool visible(int r, int c, int T) { return c <= r && r < T; }

DIPACO_SIMT_INLINE float dot4(float4 a, const float* b, float acc) {
  return fmaf(a.w, b[3], fmaf(a.z, b[2], fmaf(a.y, b[1], fmaf(a.x, b[0], acc))));
}

struct Head {
  size_t qkv, rows;  // offsets of this (sequence, head) in qkv [B,T,3C] and in [B,T,C]
  long C, C3;        // row pitches of [B,T,C] and of qkv
};
DIPACO_SIMT_INLINE Head head_of(int bh, int T, int H, int D) {
  const int b = bh / H, h = bh % H;
  const long C = long(H) * D;
  return {size_t(b) * T * 3 * C + size_t(h) * D, size_t(b) * T * C + size_t(h) * D, C, 3 * C};
}

// What a block works on, (sequence, head) blockIdx.x and the tile of rows from
// `first`, and where this thread sits: its lane and its warp's first row.
struct Tile {
  int bh, first, lane, row0;
  Head hd;
};
DIPACO_SIMT_INLINE Tile tile_of(int T, int H, int D, int rows_per_warp) {
  const int bh = blockIdx.x;
  return {bh, int(blockIdx.y) * kTile, int(threadIdx.x & 31), int(threadIdx.x / 32) * rows_per_warp,
          head_of(bh, T, H, D)};
}

// The forward's max and 1/sum and the rows' dot(dout, out) for the query tile
// from q0 (zero past T), into shared memory, by the block's threads.
DIPACO_SIMT_INLINE void load_row_stats(float* Ms, float* Is, float* Rs, const float* stats, const float* rowdot, int bh,
                                       int q0, int T, int threads) {
  for (int i = threadIdx.x; i < kTile; i += threads) {
    const bool in = q0 + i < T;
    const size_t r = size_t(bh) * T + q0 + i;
    Ms[i] = in ? stats[2 * r] : 0.0f, Is[i] = in ? stats[2 * r + 1] : 0.0f, Rs[i] = in ? rowdot[r] : 0.0f;
  }
}

template <int DP>
constexpr size_t forward_smem() {
  return sizeof(float) * (kTile * DP + kTile * (DP + 1) + kTile * DP + kTile * kTile);
}

template <int DP>
__global__ void __launch_bounds__(kThreads) flash_forward_kernel(float* out, float* stats, const float* qkv, int T, int H,
                                                                  int D, float scale) {
  constexpr int DPL = DP / 32;  // output channels per lane
  float* smem = dynamic_smem();
  float* Qs = smem;                   // [kTile][DP]      broadcasts
  float* Ks = Qs + kTile * DP;        // [kTile][DP + 1]  a key per lane
  float* Vs = Ks + kTile * (DP + 1);  // [kTile][DP]      a channel per lane
  float* Ps = Vs + kTile * DP;        // [kTile][kTile]   each warp's rows of probabilities
  const Tile t = tile_of(T, H, D, kRowsPerWarp);
  const int bh = t.bh, q0 = t.first, lane = t.lane, row0 = t.row0;
  const Head& hd = t.hd;
  const float* q = qkv + hd.qkv;
  load_tile<DP>(Qs, DP, q, hd.C3, q0, T, D);

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][DPL];
  for (int i = 0; i < kRowsPerWarp; ++i) {
    m[i] = -INFINITY, l[i] = 0.0f;
    for (int j = 0; j < DPL; ++j) acc[i][j] = 0.0f;
  }
  const int keys = min(T, q0 + kTile);  // keys [0, keys) reach some row of the tile
  for (int k0 = 0; k0 < keys; k0 += kTile) {
    __syncthreads();  // the previous tiles are read no more
    load_tile<DP>(Ks, DP + 1, q + hd.C, hd.C3, k0, T, D);
    load_tile<DP>(Vs, DP, q + 2 * hd.C, hd.C3, k0, T, D);
    __syncthreads();
    float s[kRowsPerWarp][2] = {};
    for (int d = 0; d < DP; d += 4) {
      float ka[4], kb[4];
      for (int e = 0; e < 4; ++e) ka[e] = Ks[lane * (DP + 1) + d + e], kb[e] = Ks[(lane + 32) * (DP + 1) + d + e];
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const float4 qv = *reinterpret_cast<const float4*>(Qs + (row0 + i) * DP + d);
        s[i][0] = dot4(qv, ka, s[i][0]), s[i][1] = dot4(qv, kb, s[i][1]);
      }
    }
    // Online softmax: the running max m, sum l and output rescale by exp(m_old - m_new).
    // Key 0 is in the first tile and every row sees it, so m is finite from then on.
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int r = q0 + row0 + i, c = k0 + lane;
      const float x0 = c <= r && c < T ? s[i][0] * scale : -INFINITY;
      const float x1 = c + 32 <= r && c + 32 < T ? s[i][1] * scale : -INFINITY;
      const float m_new = fmaxf(m[i], warp_max(fmaxf(x0, x1)));
      const float corr = expf(m[i] - m_new);
      const float p0 = x0 == -INFINITY ? 0.0f : expf(x0 - m_new), p1 = x1 == -INFINITY ? 0.0f : expf(x1 - m_new);
      l[i] = l[i] * corr + warp_sum(p0 + p1), m[i] = m_new;
      for (int j = 0; j < DPL; ++j) acc[i][j] *= corr;
      Ps[(row0 + i) * kTile + lane] = p0, Ps[(row0 + i) * kTile + lane + 32] = p1;
    }
    __syncwarp();
    const int cols = min(kTile, keys - k0);
    for (int c = 0; c < cols; ++c) {
      float v[DPL];
      for (int j = 0; j < DPL; ++j) v[j] = Vs[c * DP + lane + 32 * j];
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const float p = Ps[(row0 + i) * kTile + c];
        for (int j = 0; j < DPL; ++j) acc[i][j] = fmaf(p, v[j], acc[i][j]);
      }
    }
  }
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = q0 + row0 + i;
    if (r >= T) break;
    const float inv = 1.0f / l[i];
    float* o = out + hd.rows + size_t(r) * hd.C;
    for (int j = 0; j < DPL; ++j)
      if (lane + 32 * j < D) o[lane + 32 * j] = acc[i][j] * inv;
    if (lane == 0) stats[(size_t(bh) * T + r) * 2] = m[i], stats[(size_t(bh) * T + r) * 2 + 1] = inv;
  }
}

// rowdot[bh, t] = dot(dout, out) over the head's channels: sum_j P dP of the row.
__global__ void rowdot_kernel(float* rowdot, const float* dout, const float* out, int B, int T, int H, int D) {
  const int row = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (row >= B * H * T) return;
  const int bh = row / T, t = row % T;
  const Head hd = head_of(bh, T, H, D);
  const size_t at = hd.rows + size_t(t) * hd.C;
  float s = 0.0f;
  for (int d = lane; d < D; d += 32) s = fmaf(dout[at + d], out[at + d], s);
  s = warp_sum(s);
  if (lane == 0) rowdot[row] = s;
}

template <int DP>
constexpr size_t backward_kv_smem() {
  return sizeof(float) * (2 * kTile * DP + 2 * kTile * (DP + 1) + 2 * kTile * kTile + 3 * kTile);
}

// dK and dV of one tile of keys: dV = P^T dO, dK = dS^T Q over every query
// tile from the keys' own on, with P recomputed from the forward's stats and
// dS = scale * P * (dP - rowdot), dP = dO V^T.
template <int DP>
__global__ void __launch_bounds__(kThreads)
    flash_backward_kv_kernel(float* dqkv, const float* dout, const float* qkv, const float* stats, const float* rowdot,
                             int T, int H, int D, float scale) {
  constexpr int DPL = DP / 32;
  float* smem = dynamic_smem();
  float* Ks = smem;                    // [kTile][DP]      broadcasts
  float* Vs = Ks + kTile * DP;         // [kTile][DP]      broadcasts
  float* Qs = Vs + kTile * DP;         // [kTile][DP + 1]  a query per lane, then a channel per lane
  float* dOs = Qs + kTile * (DP + 1);  // [kTile][DP + 1]
  float* Ps = dOs + kTile * (DP + 1);  // [kTile keys][kTile queries]
  float* dSs = Ps + kTile * kTile;     // [kTile keys][kTile queries]
  float* Ms = dSs + kTile * kTile;     // the query tile's max, 1/sum and rowdot
  float* Is = Ms + kTile;
  float* Rs = Is + kTile;
  const Tile t = tile_of(T, H, D, kRowsPerWarp);
  const int bh = t.bh, k0 = t.first, lane = t.lane, row0 = t.row0;
  const Head& hd = t.hd;
  const float* q = qkv + hd.qkv;
  const float* dy = dout + hd.rows;
  load_tile<DP>(Ks, DP, q + hd.C, hd.C3, k0, T, D);
  load_tile<DP>(Vs, DP, q + 2 * hd.C, hd.C3, k0, T, D);

  float dk[kRowsPerWarp][DPL] = {}, dv[kRowsPerWarp][DPL] = {};
  for (int q0 = k0; q0 < T; q0 += kTile) {  // queries before k0 see none of these keys
    __syncthreads();
    load_tile<DP>(Qs, DP + 1, q, hd.C3, q0, T, D);
    load_tile<DP>(dOs, DP + 1, dy, hd.C, q0, T, D);
    load_row_stats(Ms, Is, Rs, stats, rowdot, bh, q0, T, kThreads);
    __syncthreads();
    float st[kRowsPerWarp][2] = {}, dp[kRowsPerWarp][2] = {};
    for (int d = 0; d < DP; d += 4) {
      float qa[4], qb[4], oa[4], ob[4];
      for (int e = 0; e < 4; ++e) {
        qa[e] = Qs[lane * (DP + 1) + d + e], qb[e] = Qs[(lane + 32) * (DP + 1) + d + e];
        oa[e] = dOs[lane * (DP + 1) + d + e], ob[e] = dOs[(lane + 32) * (DP + 1) + d + e];
      }
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const float4 kv = *reinterpret_cast<const float4*>(Ks + (row0 + i) * DP + d);
        const float4 vv = *reinterpret_cast<const float4*>(Vs + (row0 + i) * DP + d);
        st[i][0] = dot4(kv, qa, st[i][0]), st[i][1] = dot4(kv, qb, st[i][1]);
        dp[i][0] = dot4(vv, oa, dp[i][0]), dp[i][1] = dot4(vv, ob, dp[i][1]);
      }
    }
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int c = k0 + row0 + i;
      for (int j = 0; j < 2; ++j) {
        const int col = lane + 32 * j;
        const float p = visible(q0 + col, c, T) ? expf(st[i][j] * scale - Ms[col]) * Is[col] : 0.0f;
        Ps[(row0 + i) * kTile + col] = p;
        dSs[(row0 + i) * kTile + col] = scale * p * (dp[i][j] - Rs[col]);
      }
    }
    __syncwarp();
    const int rows = min(kTile, T - q0);
    for (int r = 0; r < rows; ++r) {
      float o[DPL], x[DPL];
      for (int j = 0; j < DPL; ++j) o[j] = dOs[r * (DP + 1) + lane + 32 * j], x[j] = Qs[r * (DP + 1) + lane + 32 * j];
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const float p = Ps[(row0 + i) * kTile + r], ds = dSs[(row0 + i) * kTile + r];
        for (int j = 0; j < DPL; ++j) dv[i][j] = fmaf(p, o[j], dv[i][j]), dk[i][j] = fmaf(ds, x[j], dk[i][j]);
      }
    }
  }
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int c = k0 + row0 + i;
    if (c >= T) break;
    float* g = dqkv + hd.qkv + size_t(c) * hd.C3;
    for (int j = 0; j < DPL; ++j)
      if (lane + 32 * j < D) g[hd.C + lane + 32 * j] = dk[i][j], g[2 * hd.C + lane + 32 * j] = dv[i][j];
  }
}

template <int DP>
constexpr size_t backward_q_smem() {
  return sizeof(float) * (2 * kTile * DP + 2 * kTile * (DP + 1) + kTile * kTile);
}

// dQ of one tile of queries: dQ = dS K over the key tiles up to its own.
template <int DP>
__global__ void __launch_bounds__(kThreads)
    flash_backward_q_kernel(float* dqkv, const float* dout, const float* qkv, const float* stats, const float* rowdot,
                            int T, int H, int D, float scale) {
  constexpr int DPL = DP / 32;
  float* smem = dynamic_smem();
  float* Qs = smem;                   // [kTile][DP]      broadcasts
  float* dOs = Qs + kTile * DP;       // [kTile][DP]      broadcasts
  float* Ks = dOs + kTile * DP;       // [kTile][DP + 1]  a key per lane, then a channel per lane
  float* Vs = Ks + kTile * (DP + 1);  // [kTile][DP + 1]
  float* dSs = Vs + kTile * (DP + 1); // [kTile queries][kTile keys]
  const Tile t = tile_of(T, H, D, kRowsPerWarp);
  const int bh = t.bh, q0 = t.first, lane = t.lane, row0 = t.row0;
  const Head& hd = t.hd;
  const float* q = qkv + hd.qkv;
  load_tile<DP>(Qs, DP, q, hd.C3, q0, T, D);
  load_tile<DP>(dOs, DP, dout + hd.rows, hd.C, q0, T, D);
  float mi[kRowsPerWarp], ii[kRowsPerWarp], ri[kRowsPerWarp], dq[kRowsPerWarp][DPL] = {};
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = q0 + row0 + i;
    const size_t at = size_t(bh) * T + min(r, T - 1);
    mi[i] = stats[2 * at], ii[i] = stats[2 * at + 1], ri[i] = rowdot[at];
  }
  const int keys = min(T, q0 + kTile);
  for (int k0 = 0; k0 < keys; k0 += kTile) {
    __syncthreads();
    load_tile<DP>(Ks, DP + 1, q + hd.C, hd.C3, k0, T, D);
    load_tile<DP>(Vs, DP + 1, q + 2 * hd.C, hd.C3, k0, T, D);
    __syncthreads();
    float s[kRowsPerWarp][2] = {}, dp[kRowsPerWarp][2] = {};
    for (int d = 0; d < DP; d += 4) {
      float ka[4], kb[4], va[4], vb[4];
      for (int e = 0; e < 4; ++e) {
        ka[e] = Ks[lane * (DP + 1) + d + e], kb[e] = Ks[(lane + 32) * (DP + 1) + d + e];
        va[e] = Vs[lane * (DP + 1) + d + e], vb[e] = Vs[(lane + 32) * (DP + 1) + d + e];
      }
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const float4 qv = *reinterpret_cast<const float4*>(Qs + (row0 + i) * DP + d);
        const float4 ov = *reinterpret_cast<const float4*>(dOs + (row0 + i) * DP + d);
        s[i][0] = dot4(qv, ka, s[i][0]), s[i][1] = dot4(qv, kb, s[i][1]);
        dp[i][0] = dot4(ov, va, dp[i][0]), dp[i][1] = dot4(ov, vb, dp[i][1]);
      }
    }
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int r = q0 + row0 + i;
      for (int j = 0; j < 2; ++j) {
        const int col = lane + 32 * j;
        const float p = visible(r, k0 + col, T) ? expf(s[i][j] * scale - mi[i]) * ii[i] : 0.0f;
        dSs[(row0 + i) * kTile + col] = scale * p * (dp[i][j] - ri[i]);
      }
    }
    __syncwarp();
    const int cols = min(kTile, keys - k0);
    for (int c = 0; c < cols; ++c) {
      float kk[DPL];
      for (int j = 0; j < DPL; ++j) kk[j] = Ks[c * (DP + 1) + lane + 32 * j];
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const float ds = dSs[(row0 + i) * kTile + c];
        for (int j = 0; j < DPL; ++j) dq[i][j] = fmaf(ds, kk[j], dq[i][j]);
      }
    }
  }
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = q0 + row0 + i;
    if (r >= T) break;
    float* g = dqkv + hd.qkv + size_t(r) * hd.C3;
    for (int j = 0; j < DPL; ++j)
      if (lane + 32 * j < D) g[lane + 32 * j] = dq[i][j];
  }
}

}  // namespace dipaco::cuda::flash
