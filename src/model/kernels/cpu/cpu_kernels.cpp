// CPU Kernels: matmuls through oneDNN, everything else as OpenMP loops.
// Reductions over rows use a fixed static schedule, so results are bitwise
// reproducible for a fixed thread count.
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <vector>

#include "dipaco/model/kernels.hpp"
#include "onednn_gemm.hpp"

namespace dipaco {
namespace {

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2/pi)

// exp(x) for x in about [-87, 88] to ~2 ulp, written so that loops vectorise
// (libm's expf/tanhf do not without -ffast-math; the clamps need -fno-trapping-math): x = n ln2 + r, a degree-6
// polynomial for exp(r), 2^n built in the exponent bits.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float n = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * std::bit_cast<float>((int32_t(n) + 127) << 23);
}

// tanh(u) = 1 - 2 / (exp(2u) + 1)
inline float fast_tanh(float u) { return 1.0f - 2.0f / (fast_exp(2.0f * u) + 1.0f); }

class CpuKernels final : public Kernels {
 public:
  std::string name() const override { return "cpu"; }

  void* alloc_bytes(size_t bytes) override {
    void* p = std::aligned_alloc(64, std::max<size_t>(64, (bytes + 63) / 64 * 64));
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, bytes);
    return p;
  }
  void release(void* p) override { std::free(p); }
  void to_device(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void to_host(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void copy(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void zero(void* d, size_t n) override { std::memset(d, 0, n); }

  void gemm(const GemmShape& s, const float* A, const float* B, float* C, const float* bias) override {
    gemm_.run(s, A, B, C, bias);
  }

  void encoder_forward(float* out, const int32_t* tok, const float* wte, const float* wpe, int N, int T, int C) override {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n) {
      const float* a = wte + size_t(tok[n]) * C;
      const float* b = wpe + size_t(n % T) * C;
      float* o = out + size_t(n) * C;
      for (int c = 0; c < C; ++c) o[c] = a[c] + b[c];
    }
  }

  void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tok, int N, int T, int C) override {
    // Parallel over channel blocks: rows with the same token never race.
    const int blk = 32, nblk = (C + blk - 1) / blk;
#pragma omp parallel for schedule(static)
    for (int cb = 0; cb < nblk; ++cb) {
      int c0 = cb * blk, c1 = std::min(C, c0 + blk);
      for (int n = 0; n < N; ++n) {
        const float* d = dout + size_t(n) * C;
        float* w = dwte + size_t(tok[n]) * C;
        float* p = dwpe + size_t(n % T) * C;
        for (int c = c0; c < c1; ++c) w[c] += d[c], p[c] += d[c];
      }
    }
  }

  void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int N,
                         int C) override {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n) {
      const float* xr = x + size_t(n) * C;
      float m = 0;
      for (int c = 0; c < C; ++c) m += xr[c];
      m /= C;
      float v = 0;
      for (int c = 0; c < C; ++c) v += (xr[c] - m) * (xr[c] - m);
      float r = 1.0f / std::sqrt(v / C + 1e-5f);
      float* o = out + size_t(n) * C;
      for (int c = 0; c < C; ++c) o[c] = (xr[c] - m) * r * w[c] + b[c];
      mean[n] = m, rstd[n] = r;
    }
  }

  void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                          const float* mean, const float* rstd, int N, int C) override {
    int nt = omp_get_max_threads();
    std::vector<float> part(size_t(nt) * 2 * C, 0.0f);
#pragma omp parallel num_threads(nt)
    {
      float* pw = part.data() + size_t(omp_get_thread_num()) * 2 * C;
      float* pb = pw + C;
#pragma omp for schedule(static)
      for (int n = 0; n < N; ++n) {
        const float* xr = x + size_t(n) * C;
        const float* dr = dout + size_t(n) * C;
        float* dxr = dx + size_t(n) * C;
        float m = mean[n], r = rstd[n];
        float dnorm_mean = 0, dnorm_norm_mean = 0;
        for (int c = 0; c < C; ++c) {
          float norm = (xr[c] - m) * r, dnorm = w[c] * dr[c];
          dnorm_mean += dnorm, dnorm_norm_mean += dnorm * norm;
          pw[c] += norm * dr[c], pb[c] += dr[c];
        }
        dnorm_mean /= C, dnorm_norm_mean /= C;
        for (int c = 0; c < C; ++c) {
          float norm = (xr[c] - m) * r;
          dxr[c] += (w[c] * dr[c] - dnorm_mean - norm * dnorm_norm_mean) * r;
        }
      }
    }
    for (int t = 0; t < nt; ++t)
      for (int c = 0; c < C; ++c) dw[c] += part[size_t(t) * 2 * C + c], db[c] += part[size_t(t) * 2 * C + C + c];
  }

  void gelu_forward(float* out, const float* x, size_t n) override {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; ++i) {
      float v = x[i];
      out[i] = 0.5f * v * (1.0f + fast_tanh(kGeluC * (v + 0.044715f * v * v * v)));
    }
  }

  void gelu_backward(float* dx, const float* x, const float* dout, size_t n) override {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; ++i) {
      float v = x[i];
      float t = fast_tanh(kGeluC * (v + 0.044715f * v * v * v));
      float sech2 = 1.0f - t * t;
      dx[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * v * sech2 * kGeluC * (1.0f + 3.0f * 0.044715f * v * v));
    }
  }

  void add(float* out, const float* a, const float* b, size_t n) override {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
  }

  void bias_backward(float* dbias, const float* dout, int M, int N) override {
    const int blk = 64, nblk = (N + blk - 1) / blk;
#pragma omp parallel for schedule(static)
    for (int jb = 0; jb < nblk; ++jb) {
      int j0 = jb * blk, j1 = std::min(N, j0 + blk);
      float acc[blk] = {};
      for (int i = 0; i < M; ++i) {
        const float* r = dout + size_t(i) * N;
        for (int j = j0; j < j1; ++j) acc[j - j0] += r[j];
      }
      for (int j = j0; j < j1; ++j) dbias[j] += acc[j - j0];
    }
  }

  // qkv row (b,t) holds [q heads | k heads | v heads], each H*D wide.
  void split_heads(float* q, float* k, float* v, const float* qkv, int B, int T, int H, int D) override {
    heads(q, k, v, const_cast<float*>(qkv), B, T, H, D, true);
  }
  void split_heads_backward(float* dqkv, const float* dq, const float* dk, const float* dv, int B, int T, int H,
                            int D) override {
    heads(const_cast<float*>(dq), const_cast<float*>(dk), const_cast<float*>(dv), dqkv, B, T, H, D, false);
  }
  void merge_heads(float* out, const float* y, int B, int T, int H, int D) override {
    merge(out, const_cast<float*>(y), B, T, H, D, true);
  }
  void merge_heads_backward(float* dy, const float* dout, int B, int T, int H, int D) override {
    merge(const_cast<float*>(dout), dy, B, T, H, D, false);
  }

  void causal_softmax_forward(float* att, const float* scores, int BH, int T, float scale) override {
#pragma omp parallel for schedule(static)
    for (long r = 0; r < long(BH) * T; ++r) {
      int t = int(r % T);
      const float* s = scores + size_t(r) * T;
      float* a = att + size_t(r) * T;
      float mx = -INFINITY;
      for (int j = 0; j <= t; ++j) mx = std::max(mx, s[j] * scale);
      float sum = 0;
      for (int j = 0; j <= t; ++j) a[j] = fast_exp(s[j] * scale - mx), sum += a[j];
      float inv = 1.0f / sum;
      for (int j = 0; j <= t; ++j) a[j] *= inv;
      for (int j = t + 1; j < T; ++j) a[j] = 0.0f;
    }
  }

  void causal_softmax_backward(float* dscores, const float* datt, const float* att, int BH, int T, float scale) override {
#pragma omp parallel for schedule(static)
    for (long r = 0; r < long(BH) * T; ++r) {
      int t = int(r % T);
      const float* a = att + size_t(r) * T;
      const float* d = datt + size_t(r) * T;
      float* ds = dscores + size_t(r) * T;
      float dot = 0;
      for (int j = 0; j <= t; ++j) dot += a[j] * d[j];
      for (int j = 0; j <= t; ++j) ds[j] = scale * a[j] * (d[j] - dot);
      for (int j = t + 1; j < T; ++j) ds[j] = 0.0f;
    }
  }

  void softmax_crossentropy_forward(float* probs, float* loss, const int32_t* target, int N, int V) override {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n) {
      float* p = probs + size_t(n) * V;
      float mx = -INFINITY;
      for (int j = 0; j < V; ++j) mx = std::max(mx, p[j]);
      float sum = 0;
      for (int j = 0; j < V; ++j) p[j] = fast_exp(p[j] - mx), sum += p[j];
      float inv = 1.0f / sum;
      for (int j = 0; j < V; ++j) p[j] *= inv;
      loss[n] = -std::log(std::max(p[target[n]], 1e-30f));
    }
  }

  void softmax_crossentropy_backward(float* probs, const int32_t* target, int N, int V, float scale) override {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n) {
      float* p = probs + size_t(n) * V;
      p[target[n]] -= 1.0f;
      for (int j = 0; j < V; ++j) p[j] *= scale;
    }
  }

  double sum(const float* x, size_t n) override {
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (size_t i = 0; i < n; ++i) s += x[i];
    return s;
  }
  double sum_squares(const float* x, size_t n) override {
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (size_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
    return s;
  }
  void scale(float* x, float s, size_t n) override {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; ++i) x[i] *= s;
  }

  void adamw(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2, float eps, float wd,
             long t) override {
    float c1 = 1.0f / (1.0f - std::pow(b1, float(t))), c2 = 1.0f / (1.0f - std::pow(b2, float(t)));
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; ++i) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      p[i] -= lr * ((m[i] * c1) / (std::sqrt(v[i] * c2) + eps) + wd * p[i]);
    }
  }

  void weighted_difference(float* out, const float* anchor, const float* x, float w, size_t n) override {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; ++i) out[i] += w * (anchor[i] - x[i]);
  }

  void outer_nesterov(float* anchor, float* mom, const float* delta, size_t n, float lr, float mu) override {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; ++i) {
      mom[i] = mu * mom[i] + delta[i];
      anchor[i] -= lr * (delta[i] + mu * mom[i]);
    }
  }

 private:
  // to_heads: qkv -> q,k,v; otherwise q,k,v -> qkv.
  static void heads(float* q, float* k, float* v, float* qkv, int B, int T, int H, int D, bool to_heads) {
    const int C = H * D;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t) {
        float* row = qkv + (size_t(b) * T + t) * 3 * C;
        for (int h = 0; h < H; ++h) {
          size_t o = ((size_t(b) * H + h) * T + t) * D;
          float* dst[3] = {q + o, k + o, v + o};
          for (int s = 0; s < 3; ++s) {
            float* r = row + s * C + h * D;
            if (to_heads)
              std::memcpy(dst[s], r, D * sizeof(float));
            else
              std::memcpy(r, dst[s], D * sizeof(float));
          }
        }
      }
  }
  // to_rows: y [B,H,T,D] -> out [B,T,C]; otherwise out -> y.
  static void merge(float* out, float* y, int B, int T, int H, int D, bool to_rows) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t)
        for (int h = 0; h < H; ++h) {
          float* r = out + (size_t(b) * T + t) * H * D + h * D;
          float* yy = y + ((size_t(b) * H + h) * T + t) * D;
          if (to_rows)
            std::memcpy(r, yy, D * sizeof(float));
          else
            std::memcpy(yy, r, D * sizeof(float));
        }
  }

  OnednnGemm gemm_;
};

}  // namespace

std::unique_ptr<Kernels> make_cpu_kernels() { return std::make_unique<CpuKernels>(); }

std::unique_ptr<Kernels> make_kernels(const std::string& device, int local_rank) {
  if (device == "cpu") return make_cpu_kernels();
  if (device == "cuda") {
#ifdef DIPACO_HAVE_CUDA
    return make_cuda_kernels(local_rank);
#else
    (void)local_rank;
    throw std::runtime_error("run.device = cuda, but this dipaco was built without CUDA (configure with -DDIPACO_CUDA=ON)");
#endif
  }
  throw std::runtime_error("unknown device '" + device + "'");
}

}  // namespace dipaco
