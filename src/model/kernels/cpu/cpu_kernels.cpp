// CPU Kernels: matmuls through oneDNN, everything else as OpenMP loops.
// Reductions over rows use a fixed static schedule, so results are bitwise
// reproducible for a fixed thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <vector>

#include "dipaco/model/kernels.hpp"
#include "onednn_gemm.hpp"
#include "row_kernels.hpp"

namespace dipaco {
namespace {

// Flat arrays go to the row kernels in chunks of this many elements, one chunk per
// loop iteration, so each thread runs long vector loops.
constexpr size_t kChunk = 4096;

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
    for (int n = 0; n < N; ++n)
      rows::layernorm_forward(out + size_t(n) * C, mean + n, rstd + n, x + size_t(n) * C, w, b, C);
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
      for (int n = 0; n < N; ++n)
        rows::layernorm_backward(dx + size_t(n) * C, pw, pb, dout + size_t(n) * C, x + size_t(n) * C, w, mean[n], rstd[n], C);
    }
    for (int t = 0; t < nt; ++t)
      for (int c = 0; c < C; ++c) dw[c] += part[size_t(t) * 2 * C + c], db[c] += part[size_t(t) * 2 * C + C + c];
  }

  void gelu_forward(float* out, const float* x, size_t n) override {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i += kChunk) rows::gelu_forward(out + i, x + i, std::min(kChunk, n - i));
  }

  void gelu_backward(float* dx, const float* x, const float* dout, size_t n) override {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i += kChunk) rows::gelu_backward(dx + i, x + i, dout + i, std::min(kChunk, n - i));
  }

  void add(float* out, const float* a, const float* b, size_t n) override {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
  }

  void bias_backward(float* dbias, const float* dout, int M, int N) override {
    const int blk = 64, nblk = (N + blk - 1) / blk;
#pragma omp parallel for schedule(static)
    for (int jb = 0; jb < nblk; ++jb) {
      int j0 = jb * blk, w = std::min(N, j0 + blk) - j0;
      float acc[blk] = {};
      rows::column_sums(acc, dout + j0, M, size_t(N), w);
      for (int j = 0; j < w; ++j) dbias[j0 + j] += acc[j];
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
    for (long r = 0; r < long(BH) * T; ++r)
      rows::causal_softmax_forward(att + size_t(r) * T, scores + size_t(r) * T, int(r % T) + 1, T, scale);
  }

  void causal_softmax_backward(float* dscores, const float* datt, const float* att, int BH, int T, float scale) override {
#pragma omp parallel for schedule(static)
    for (long r = 0; r < long(BH) * T; ++r)
      rows::causal_softmax_backward(dscores + size_t(r) * T, datt + size_t(r) * T, att + size_t(r) * T, int(r % T) + 1, T,
                                    scale);
  }

  void softmax_crossentropy_forward(float* probs, float* loss, const int32_t* target, int N, int V) override {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n) loss[n] = rows::softmax_crossentropy(probs + size_t(n) * V, target[n], V);
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
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i += kChunk)
      rows::adamw(p + i, g + i, m + i, v + i, std::min(kChunk, n - i), lr, b1, b2, eps, wd, c1, c2);
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
