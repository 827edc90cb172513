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
#include "causal_attention.hpp"
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
  bool device_memory() const override { return false; }

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
  void to_bf16(uint16_t* out, const float* in, size_t n) override { OnednnGemm::to_bf16(out, in, n); }

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

  // Rows in one contiguous pass per thread into a private row of sums (column
  // blocks would stride through dout once per block), then the partial sums in
  // thread order: bitwise reproducible for a fixed thread count.
  void bias_backward(float* dbias, const float* dout, int M, int N) override {
    const int nt = std::min(omp_get_max_threads(), std::max(1, M / 64));
    std::vector<float> part(size_t(nt) * N, 0.0f);
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num(), r0 = int(long(M) * t / nt), r1 = int(long(M) * (t + 1) / nt);
      rows::column_sums(part.data() + size_t(t) * N, dout + size_t(r0) * N, r1 - r0, size_t(N), N);
    }
    for (int t = 0; t < nt; ++t) rows::add_into(dbias, part.data() + size_t(t) * N, N);
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

  // Causal blocks pay only once they are large matmuls: on one AVX-512 core at
  // T = 256, D = 64, blocks of 64 rows cut the attention matmuls from 140 to
  // 111-128 ms a step; at T = 128, D = 32 no block size beat the full square.
  // Not in bf16: a bf16 matmul converts its whole strided operand on every
  // call, so four blocks convert Q, K and V four times (d512 bf16: 0.73-0.90x).
  int causal_block_rows(int T, Precision p) const override { return T >= 256 && p != Precision::bf16 ? 64 : T; }

  bool has_fused_attention(int) const override { return true; }
  void fused_attention_forward(float* out, float* att, const float* qkv, int B, int T, int H, int D, float scale,
                               Precision) override {
    causal_attention::forward(out, att, qkv, B, T, H, D, scale);
  }
  // The CPU recomputes each row's dot(P, dP) in cache and needs no `out`.
  void fused_attention_backward(float* dqkv, const float* dout, const float* qkv, const float* /*out*/, const float* att,
                                int B, int T, int H, int D, float scale, Precision) override {
    causal_attention::backward(dqkv, dout, qkv, att, B, T, H, D, scale);
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
  OnednnGemm gemm_;
};

}  // namespace

std::unique_ptr<Kernels> make_cpu_kernels() { return std::make_unique<CpuKernels>(); }

std::unique_ptr<Kernels> make_kernels(Device device, int local_rank) {
  if (device == Device::cpu) return make_cpu_kernels();
#ifdef DIPACO_HAVE_CUDA
  return make_cuda_kernels(local_rank);
#else
  (void)local_rank;
  throw std::runtime_error("run.device = cuda, but this dipaco was built without CUDA (configure with -DDIPACO_CUDA=ON)");
#endif
}

}  // namespace dipaco
