#include "causal_attention.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fast_exp.hpp"

// Generic vectors (GCC vector extensions) inside always-inlined templates take
// the instruction set of the function they are inlined into: one body, compiled
// below for AVX-512, for AVX2 + FMA and for the baseline, picked at run time.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace dipaco::causal_attention {
namespace {

#define DIPACO_INLINE __attribute__((always_inline)) inline

template <int W>
struct Lanes;
template <>
struct Lanes<16> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct Lanes<8> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct Lanes<4> {
  typedef float type __attribute__((vector_size(16)));
};
template <int W>
using vec = typename Lanes<W>::type;

// A register tile is kRows x kVecs accumulators plus kVecs loaded vectors: 28
// of the 32 AVX-512 registers, 10 of the 16 below it.
template <int W>
constexpr int kRows = W == 16 ? 8 : 4;
template <int W>
constexpr int kVecs = W == 16 ? 3 : 2;

// C[i, :] = sum over k of A(i, k) * B[k, :], with A(i, k) = A[i*sr + k*sk] (A's
// rows, or its columns read as rows) and B's rows padded to whole vectors. The
// range of k, or of C's columns, follows the causal triangle.
struct Product {
  enum Range {
    causal_cols,  // k < K; C's columns only up to the row's own index (the scores)
    k_upto_row,   // k <= the row's index: A's masked part is never read (P V, dS K)
    k_from_row,   // k >= the row's index, k < K (P^T dO, dS^T Q: A read transposed)
  };
  const float* A;
  long sr, sk;
  const float* B;
  long ldb;
  float* C;
  long ldc;
  int M, K;
  Range range;
  int nv;  // vectors of C's columns per row (causal_cols: derived per block)
};

template <int W, int R, int NV>
DIPACO_INLINE void tile(const float* A, long sr, long sk, const float* B, long ldb, int k0, int k1, float* C, long ldc) {
  vec<W> acc[R][NV] = {};
  for (int k = k0; k < k1; ++k) {
    vec<W> b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) std::memcpy(&b[v], B + k * ldb + v * W, sizeof(vec<W>));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float a = A[r * sr + k * sk];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) std::memcpy(C + r * ldc + v * W, &acc[r][v], sizeof(vec<W>));
}

// The last vectors of a row (fewer than kVecs), then the last rows (fewer than kRows).
template <int W, int R, int NV>
DIPACO_INLINE void tile_vecs(int nv, const float* A, long sr, long sk, const float* B, long ldb, int k0, int k1, float* C,
                             long ldc) {
  if constexpr (NV > 1)
    if (nv < NV) return tile_vecs<W, R, NV - 1>(nv, A, sr, sk, B, ldb, k0, k1, C, ldc);
  tile<W, R, NV>(A, sr, sk, B, ldb, k0, k1, C, ldc);
}

template <int W, int R>
DIPACO_INLINE void row_block(int rows, int nv, const float* A, long sr, long sk, const float* B, long ldb, int k0, int k1,
                             float* C, long ldc) {
  if constexpr (R > 1)
    if (rows < R) return row_block<W, R - 1>(rows, nv, A, sr, sk, B, ldb, k0, k1, C, ldc);
  for (int v = 0; v < nv; v += kVecs<W>)
    tile_vecs<W, R, kVecs<W>>(std::min(kVecs<W>, nv - v), A, sr, sk, B + v * W, ldb, k0, k1, C + v * W, ldc);
}

template <int W>
DIPACO_INLINE void multiply_on(const Product& p) {
  constexpr int R = kRows<W>;
  for (int i0 = 0; i0 < p.M; i0 += R) {
    const int rows = std::min(R, p.M - i0), end = i0 + rows;
    int k0 = 0, k1 = p.K, nv = p.nv;
    if (p.range == Product::causal_cols) nv = (end + W - 1) / W;
    if (p.range == Product::k_upto_row) k1 = std::min(p.K, end);
    if (p.range == Product::k_from_row) k0 = i0;  // the block's later rows read zeros of A's masked part
    row_block<W, R>(rows, nv, p.A + i0 * p.sr, p.sr, p.sk, p.B, p.ldb, k0, k1, p.C + i0 * p.ldc, p.ldc);
  }
}

template <int W>
DIPACO_INLINE vec<W> load(const float* p) {
  vec<W> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <int W>
DIPACO_INLINE void store(float* p, vec<W> v) {
  std::memcpy(p, &v, sizeof v);
}
// Lane sums and maxima in a fixed order: the same result on every run.
template <int W>
DIPACO_INLINE float lane_sum(vec<W> v) {
  float s = 0;
  for (int l = 0; l < W; ++l) s += v[l];
  return s;
}
template <int W>
DIPACO_INLINE float lane_max(vec<W> v) {
  float m = v[0];
  for (int l = 1; l < W; ++l) m = std::max(m, v[l]);
  return m;
}

// A row of scores s[0..len) becomes the probabilities softmax(scale * s) in
// place, zeros after them up to one vector past the last one that holds any
// (as far as a register tile of the causal products reads). The row's max and
// 1/sum are kept (fresh: found here, in the forward), so that the backward
// recomputes the same row bitwise from them.
template <int W>
DIPACO_INLINE void probabilities_row(float* s, int len, int Tp, float scale, float& m, float& inv, bool fresh) {
  const int n = (len + W - 1) / W;
  for (int j = len; j < n * W; ++j) s[j] = -INFINITY;
  if (fresh) {
    vec<W> mx = load<W>(s);
    for (int v = 1; v < n; ++v) {
      const vec<W> x = load<W>(s + v * W);
      mx = x > mx ? x : mx;
    }
    m = lane_max<W>(mx) * scale;  // scale > 0: the same as the max of the scaled scores
  }
  const vec<W> zero = {};
  vec<W> sum = {};
  for (int v = 0; v < n; ++v) {
    const vec<W> x = load<W>(s + v * W);
    const vec<W> e = x > -INFINITY ? fast_exp(x * scale - m) : zero;
    store<W>(s + v * W, e);
    sum += e;
  }
  if (fresh) inv = 1.0f / lane_sum<W>(sum);
  for (int v = 0; v < n; ++v) store<W>(s + v * W, load<W>(s + v * W) * inv);
  std::fill(s + n * W, s + std::min(Tp, n * W + W), 0.0f);
}

// A row of dP becomes dS = scale * P * (dP - dot(P, dP)) in place; P's row
// is zero past the causal part, and so is dS then.
template <int W>
DIPACO_INLINE void softmax_backward_row(float* d, const float* p, int len, int Tp, float scale) {
  const int n = (len + W - 1) / W;
  vec<W> dot = {};
  for (int v = 0; v < n; ++v) dot += load<W>(p + v * W) * load<W>(d + v * W);
  const float dt = lane_sum<W>(dot);
  for (int v = 0; v < n; ++v) store<W>(d + v * W, scale * load<W>(p + v * W) * (load<W>(d + v * W) - dt));
  std::fill(d + n * W, d + std::min(Tp, n * W + W), 0.0f);
}

// rows x cols of src (pitch lds) into dst (pitch ldd), zeros up to ldd; or
// transposed into dst [cols][ldd].
DIPACO_INLINE void pack(float* dst, long ldd, const float* src, long lds, int rows, int cols) {
  for (int i = 0; i < rows; ++i) {
    for (int c = 0; c < cols; ++c) dst[i * ldd + c] = src[i * lds + c];
    for (int c = cols; c < ldd; ++c) dst[i * ldd + c] = 0.0f;
  }
}
// Transposed: one destination row at a time. Stores a column apart (ldd floats)
// alias in the cache and in the load-store queue and ran ten times slower.
DIPACO_INLINE void pack_transposed(float* dst, long ldd, const float* src, long lds, int rows, int cols) {
  for (int c = 0; c < cols; ++c) {
    for (int i = 0; i < rows; ++i) dst[c * ldd + i] = src[i * lds + c];
    for (int i = rows; i < ldd; ++i) dst[c * ldd + i] = 0.0f;
  }
}
// rows x cols of src (pitch lds) into dst (pitch ldd).
DIPACO_INLINE void unpack(float* dst, long ldd, const float* src, long lds, int rows, int cols) {
  for (int i = 0; i < rows; ++i)
    for (int c = 0; c < cols; ++c) dst[i * ldd + c] = src[i * lds + c];
}

int round_up(int n, int w) { return (n + w - 1) / w * w; }

// One thread's working set, kept between calls (an allocation per call would
// fault its pages in anew every time): packed operands and the score rows.
struct Scratch {
  std::vector<float> buf;
  float* take(size_t n) {
    if (buf.size() < n) buf.resize(n);
    return buf.data();
  }
};
Scratch& scratch() {
  static thread_local Scratch s;
  return s;
}

// One (sequence, head): pointers at its first element, pitches of qkv (3C), out and dout (C).
struct Head {
  const float* q;
  long C;
  int T, D;
  float scale;
};

// A [T, D] operand as rows of whole vectors: read in place (pitch ld) when D is
// whole vectors, else packed into buf with zero padding.
struct Rows {
  const float* p;
  long ld;
};
DIPACO_INLINE Rows as_rows(const float* src, long ld, int T, int D, int Dp, float* buf) {
  if (D == Dp) return {src, ld};
  pack(buf, Dp, src, ld, T, D);
  return {buf, Dp};
}
// Where a [T, D] result goes: in place when D is whole vectors, else through buf.
struct Dest {
  float* p;
  long ld;
};
DIPACO_INLINE Dest result_rows(float* dst, long ld, int D, int Dp, float* buf) {
  return D == Dp ? Dest{dst, ld} : Dest{buf, Dp};
}
DIPACO_INLINE void store_result(float* dst, long ld, Dest r, int T, int D) {
  if (r.p != dst) unpack(dst, ld, r.p, r.ld, T, D);
}

template <int W>
DIPACO_INLINE void forward_head(const Head& h, float* out, float* stats) {
  const int T = h.T, D = h.D, Tp = round_up(T, W), Dp = round_up(D, W);
  const long C3 = 3 * h.C;
  float* kt = scratch().take(size_t(D) * Tp + size_t(T) * Dp * 2 + size_t(T) * Tp);
  float *vbuf = kt + size_t(D) * Tp, *obuf = vbuf + size_t(T) * Dp, *s = obuf + size_t(T) * Dp;
  pack_transposed(kt, Tp, h.q + h.C, C3, T, D);
  const Rows v = as_rows(h.q + 2 * h.C, C3, T, D, Dp, vbuf);
  const Dest o = result_rows(out, h.C, D, Dp, obuf);
  multiply_on<W>({h.q, C3, 1, kt, Tp, s, Tp, T, D, Product::causal_cols, 0});  // S = Q K^T
  for (int i = 0; i < T; ++i) probabilities_row<W>(s + size_t(i) * Tp, i + 1, Tp, h.scale, stats[2 * i], stats[2 * i + 1], true);
  multiply_on<W>({s, Tp, 1, v.p, v.ld, o.p, o.ld, T, T, Product::k_upto_row, Dp / W});  // O = P V
  store_result(out, h.C, o, T, D);
}

// The probabilities are recomputed from Q, K and the forward's stats: cheaper
// than writing and reading back B*H*T*T of them through memory.
template <int W>
DIPACO_INLINE void backward_head(const Head& h, float* dq, const float* dy, const float* stats) {
  const int T = h.T, D = h.D, Tp = round_up(T, W), Dp = round_up(D, W), nv = Dp / W;
  const long C3 = 3 * h.C;
  float* kt = scratch().take(size_t(D) * Tp * 2 + size_t(T) * Dp * 4 + size_t(T) * Tp * 2);
  float *vt = kt + size_t(D) * Tp, *qbuf = vt + size_t(D) * Tp, *kbuf = qbuf + size_t(T) * Dp, *dybuf = kbuf + size_t(T) * Dp;
  float *g = dybuf + size_t(T) * Dp, *p = g + size_t(T) * Dp, *ds = p + size_t(T) * Tp;
  pack_transposed(kt, Tp, h.q + h.C, C3, T, D);
  pack_transposed(vt, Tp, h.q + 2 * h.C, C3, T, D);
  const Rows q = as_rows(h.q, C3, T, D, Dp, qbuf), k = as_rows(h.q + h.C, C3, T, D, Dp, kbuf);
  const Rows dyr = as_rows(dy, h.C, T, D, Dp, dybuf);
  multiply_on<W>({h.q, C3, 1, kt, Tp, p, Tp, T, D, Product::causal_cols, 0});  // S = Q K^T, again
  multiply_on<W>({dy, h.C, 1, vt, Tp, ds, Tp, T, D, Product::causal_cols, 0});  // dP = dO V^T
  for (int i = 0; i < T; ++i) {
    float* prow = p + size_t(i) * Tp;
    float m = stats[2 * i], inv = stats[2 * i + 1];
    probabilities_row<W>(prow, i + 1, Tp, h.scale, m, inv, false);
    softmax_backward_row<W>(ds + size_t(i) * Tp, prow, i + 1, Tp, h.scale);  // dS
  }
  // dQ = dS K, dK = dS^T Q, dV = P^T dO, each into its third of dqkv
  const struct {
    const float* A;
    long sr, sk;
    Rows B;
    Product::Range range;
    float* dst;
  } grads[3] = {{ds, Tp, 1, k, Product::k_upto_row, dq},
                {ds, 1, Tp, q, Product::k_from_row, dq + h.C},
                {p, 1, Tp, dyr, Product::k_from_row, dq + 2 * h.C}};
  for (const auto& x : grads) {
    const Dest r = result_rows(x.dst, C3, D, Dp, g);
    multiply_on<W>({x.A, x.sr, x.sk, x.B.p, x.B.ld, r.p, r.ld, T, T, x.range, nv});
    store_result(x.dst, C3, r, T, D);
  }
}

// The per-head routines for each instruction set; the loader's choice below.
#define DIPACO_HEADS(SUFFIX, TARGET, W)                                                                     \
  TARGET void forward_##SUFFIX(const Head& h, float* out, float* stats) { forward_head<W>(h, out, stats); } \
  TARGET void backward_##SUFFIX(const Head& h, float* dq, const float* dy, const float* stats) {             \
    backward_head<W>(h, dq, dy, stats);                                                                    \
  }
DIPACO_HEADS(avx512, __attribute__((target("arch=x86-64-v4"))), 16)
DIPACO_HEADS(avx2, __attribute__((target("arch=x86-64-v3"))), 8)
DIPACO_HEADS(baseline, , 4)

struct Isa {
  void (*forward)(const Head&, float*, float*);
  void (*backward)(const Head&, float*, const float*, const float*);
};

// The widest the CPU runs; DIPACO_ATTENTION_LANES=4|8 asks for a narrower one
// (the tests run every width the machine has).
const Isa& isa() {
  static const Isa chosen = [] {
    const char* env = std::getenv("DIPACO_ATTENTION_LANES");
    const int most = env ? std::atoi(env) : 16;
    if (most >= 16 && __builtin_cpu_supports("x86-64-v4")) return Isa{forward_avx512, backward_avx512};
    if (most >= 8 && __builtin_cpu_supports("x86-64-v3")) return Isa{forward_avx2, backward_avx2};
    return Isa{forward_baseline, backward_baseline};
  }();
  return chosen;
}

}  // namespace

void forward(float* out, float* stats, const float* qkv, int B, int T, int H, int D, float scale) {
  const Isa& x = isa();
  const long C = long(H) * D;
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * H; ++bh) {
    const size_t b = bh / H, head = size_t(bh % H) * D;
    x.forward({qkv + b * T * 3 * C + head, C, T, D, scale}, out + b * T * C + head, stats + size_t(bh) * 2 * T);
  }
}

void backward(float* dqkv, const float* dout, const float* qkv, const float* stats, int B, int T, int H, int D,
              float scale) {
  const Isa& x = isa();
  const long C = long(H) * D;
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * H; ++bh) {
    const size_t b = bh / H, head = size_t(bh % H) * D;
    x.backward({qkv + b * T * 3 * C + head, C, T, D, scale}, dqkv + b * T * 3 * C + head, dout + b * T * C + head,
               stats + size_t(bh) * 2 * T);
  }
}

}  // namespace dipaco::causal_attention
