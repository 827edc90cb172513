// The Kernels interface: every numeric primitive the model and the optimizers
// need, over raw device pointers with explicit shapes. One implementation per
// device (src/model/kernels/cpu: oneDNN + OpenMP; src/model/kernels/cuda: cuBLAS + CUDA).
// Layers (layers.hpp) compose these; the model never touches memory directly.
//
// Conventions: row-major; N rows of C channels; "+=" in a comment means the
// kernel accumulates into its output, otherwise it overwrites.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dipaco/io/deck.hpp"  // Device, Precision (train.precision)

namespace dipaco {

// The widest head the CUDA kernels' fused (flash) attention takes; wider heads
// get the composed attention and its [B, H, T, T] probabilities.
constexpr int kCudaFusedAttentionMaxHead = 128;

// C[b] = op(A[b]) * op(B[b]) (+ bias broadcast over rows) (+ C[b] when accumulate).
// A is [M,K] ([K,M] when trans_a), B is [K,N] ([N,K] when trans_b), C is [M,N].
// Batches may be two-level (batch2 groups of batch matrices, e.g. sequences of
// heads) and rows may have a pitch (ld) wider than the matrix, so attention
// reads heads straight out of the fused [B, T, 3C] qkv rows.
struct GemmShape {
  int batch = 1, M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
  long stride_a = 0, stride_b = 0, stride_c = 0;  // elements between batches
  int batch2 = 1;
  long stride2_a = 0, stride2_b = 0, stride2_c = 0;  // elements between outer batches
  long ld_a = 0, ld_b = 0, ld_c = 0;                 // row pitch as stored; 0: dense
  bool accumulate = false;
  Precision precision = Precision::fp32;
  // bf16 copies of A and B (same layout), made once by the caller and used here
  // instead of converting the operand in the call (precision bf16 only): a value
  // multiplied by several matmuls is rounded once (Kernels::to_bf16).
  const uint16_t* a_bf16 = nullptr;
  const uint16_t* b_bf16 = nullptr;
  // Row pitch of each operand as stored.
  long lda() const { return ld_a ? ld_a : (trans_a ? M : K); }
  long ldb() const { return ld_b ? ld_b : (trans_b ? K : N); }
  long ldc() const { return ld_c ? ld_c : N; }
  // Elements operands A and B span (bf16 staging buffers).
  size_t extent_a() const { return extent(stride_a, stride2_a, trans_a ? K : M, lda(), trans_a ? M : K); }
  size_t extent_b() const { return extent(stride_b, stride2_b, trans_b ? N : K, ldb(), trans_b ? K : N); }

 private:
  size_t extent(long stride, long stride2, int rows, long ld, int cols) const {
    return size_t(batch2 - 1) * size_t(stride2) + size_t(batch - 1) * size_t(stride) + size_t(rows - 1) * size_t(ld) +
           size_t(cols);
  }
};

// A stretch [offset, offset + size) of a parameter arena with one weight decay.
struct AdamwRun {
  size_t offset, size;
  float weight_decay;
};

class Kernels {
 public:
  virtual ~Kernels() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda": for messages; decisions ask device_memory()
  // True when buffers live in a GPU's memory (the host reaches them only
  // through to_device/to_host), false when they are host memory.
  virtual bool device_memory() const = 0;

  // Device memory (host memory on the CPU). alloc_bytes returns zeroed memory.
  virtual void* alloc_bytes(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  virtual void to_device(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* dst, size_t bytes) = 0;
  virtual void synchronize() {}
  // The most device memory the kernels have held at once (their allocations and
  // scratch); 0 where memory is the host's (the process's peak RSS says it).
  virtual size_t peak_device_bytes() const { return 0; }

  virtual void gemm(const GemmShape& s, const float* A, const float* B, float* C, const float* bias) = 0;
  // out = in rounded to bf16 (to nearest, ties to even), as gemm rounds its operands.
  virtual void to_bf16(uint16_t* out, const float* in, size_t n) = 0;

  // out[n,:] = wte[tok[n],:] + wpe[n % T,:]
  virtual void encoder_forward(float* out, const int32_t* tok, const float* wte, const float* wpe, int N, int T, int C) = 0;
  // dwte += scatter(dout), dwpe += sum over the batch
  virtual void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tok, int N, int T, int C) = 0;

  // out = (x - mean) * rstd * w + b; saves mean and rstd per row.
  virtual void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int N, int C) = 0;
  // dx +=, dw +=, db +=
  virtual void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                                  const float* mean, const float* rstd, int N, int C) = 0;

  // tanh-approximated GELU; dx = dout * gelu'(x)
  virtual void gelu_forward(float* out, const float* x, size_t n) = 0;
  virtual void gelu_backward(float* dx, const float* x, const float* dout, size_t n) = 0;

  // out = a + b
  virtual void add(float* out, const float* a, const float* b, size_t n) = 0;
  // dbias += column sums of dout [M,N]
  virtual void bias_backward(float* dbias, const float* dout, int M, int N) = 0;

  // att = causal softmax(scale * scores) over [BH,T,T] (upper triangle -> 0). Reads
  // only the causal part (column <= row) of scores and datt, so it may be left unset.
  virtual void causal_softmax_forward(float* att, const float* scores, int BH, int T, float scale) = 0;
  // dscores = scale * att * (datt - rowsum(att * datt))
  virtual void causal_softmax_backward(float* dscores, const float* datt, const float* att, int BH, int T, float scale) = 0;
  // Query rows per block of the causal attention (layers.cpp): blocks skip the
  // masked upper triangle at the price of more, smaller matmuls.
  virtual int causal_block_rows(int T, Precision) const { return T; }
  // Causal attention in one kernel (layers.hpp's attention_forward/backward contract,
  // computed in fp32): scores, softmax and value product per head in cache; att holds
  // each score row's max and 1/sum (2*B*H*T floats), not the probabilities. Devices
  // without one (or without one for this head size) get attention composed from
  // gemm and causal_softmax_* (layers.cpp).
  virtual bool has_fused_attention(int /*head_size*/) const { return false; }
  // p: the model's precision; a device may use it (CUDA's bf16 runs on the tensor cores).
  virtual void fused_attention_forward(float* out, float* att, const float* qkv, int B, int T, int H, int D, float scale,
                                       Precision p);
  // out is the forward's output: each row's dot(dout, out) is the softmax
  // backward's row term without a second pass over the keys.
  virtual void fused_attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                                        const float* att, int B, int T, int H, int D, float scale, Precision p);

  // logits [N,V] -> probabilities in place; loss[n] = -log p[target[n]].
  virtual void softmax_crossentropy_forward(float* probs, float* loss, const int32_t* target, int N, int V) = 0;
  // dlogits = scale * (probs - onehot(target)), in place over probs.
  virtual void softmax_crossentropy_backward(float* probs, const int32_t* target, int N, int V, float scale) = 0;

  // Reductions return to the host in double.
  virtual double sum(const float* x, size_t n) = 0;
  virtual double sum_squares(const float* x, size_t n) = 0;
  virtual void scale(float* x, float s, size_t n) = 0;

  // AdamW with decoupled weight decay; t is the 1-based step.
  virtual void adamw(float* p, const float* g, float* m, float* v, size_t n, float lr, float beta1, float beta2,
                     float eps, float weight_decay, long t) = 0;
  // AdamW over stretches of one arena, each with its weight decay: the same as
  // adamw() on each. Devices where a launch costs override it with one launch
  // for many runs (CUDA: the whole arena of a d768/L12 path in two).
  virtual void adamw_runs(float* p, const float* g, float* m, float* v, const std::vector<AdamwRun>& runs, float lr,
                          float beta1, float beta2, float eps, long t) {
    for (const AdamwRun& r : runs)
      adamw(p + r.offset, g + r.offset, m + r.offset, v + r.offset, r.size, lr, beta1, beta2, eps, r.weight_decay, t);
  }
  // out += w * (anchor - x): one path's weighted share of an outer gradient.
  virtual void weighted_difference(float* out, const float* anchor, const float* x, float w, size_t n) = 0;
  // Outer Nesterov step: mom = mu*mom + delta; anchor -= lr * (delta + mu*mom).
  virtual void outer_nesterov(float* anchor, float* mom, const float* delta, size_t n, float lr, float mu) = 0;
};

inline void Kernels::fused_attention_forward(float*, float*, const float*, int, int, int, int, float, Precision) {
  throw std::logic_error(name() + " kernels have no fused attention");
}
inline void Kernels::fused_attention_backward(float*, const float*, const float*, const float*, const float*, int, int,
                                              int, int, float, Precision) {
  throw std::logic_error(name() + " kernels have no fused attention");
}

// Throws std::runtime_error when the device is unavailable (cuda in a build without CUDA).
std::unique_ptr<Kernels> make_kernels(Device device, int local_rank = 0);
std::unique_ptr<Kernels> make_cpu_kernels();
#ifdef DIPACO_HAVE_CUDA
std::unique_ptr<Kernels> make_cuda_kernels(int device_index);
#endif

// A device buffer owned RAII-style.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Kernels& k, size_t n) : k_(&k), n_(n), p_(static_cast<T*>(k.alloc_bytes(n * sizeof(T)))) {}
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    reset();
    k_ = o.k_, n_ = o.n_, p_ = o.p_;
    o.p_ = nullptr, o.n_ = 0;
    return *this;
  }
  ~DeviceBuffer() { reset(); }
  void reset() {
    if (p_) k_->release(p_);
    p_ = nullptr, n_ = 0;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  Kernels* k_ = nullptr;
  size_t n_ = 0;
  T* p_ = nullptr;
};

}  // namespace dipaco
