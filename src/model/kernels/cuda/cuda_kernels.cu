// CUDA Kernels: matmuls through cuBLAS, everything else in cuda_ops.cu.
//
// All work goes to the legacy default stream, so the blocking cudaMemcpy of
// to_device/to_host is ordered after the kernels queued before it and the
// host never reads a result early. The fp32 matmuls use plain fp32 compute
// (no TF32) so results match the CPU backend; tf32 multiplies the fp32
// operands on the tensor cores with TF32 rounding; bf16 rounds both operands
// to bf16 (tensor cores); all accumulate and store in fp32.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>

#include "cuda_check.cuh"
#include "cuda_ops.cuh"
#include "flash_attention.cuh"
#include "dipaco/model/kernels.hpp"

namespace dipaco {
namespace {

constexpr cudaStream_t kStream = nullptr;       // legacy default stream, see above
constexpr size_t kBlasWorkspace = 32u << 20;    // cuBLAS's advice for Hopper

// AdamW's bias corrections 1/(1 - beta^t), exactly as the CPU backend computes them.
std::pair<float, float> bias_corrections(float beta1, float beta2, long t) {
  return {1.0f / (1.0f - std::pow(beta1, float(t))), 1.0f / (1.0f - std::pow(beta2, float(t)))};
}

// Bytes of device memory held now and at most (peak_device_bytes).
struct Tally {
  size_t now = 0, peak = 0;
  void add(size_t bytes) { now += bytes, peak = std::max(peak, now); }
  void remove(size_t bytes) { now -= bytes; }
};

// A device buffer that only grows; its contents do not survive growing.
template <typename T>
class Scratch {
 public:
  explicit Scratch(Tally& tally) : tally_(tally) {}
  ~Scratch() { cudaFree(p_); }
  T* get(size_t n) {
    if (n > n_) {
      DIPACO_CUDA(cudaFree(p_));
      tally_.remove(n_ * sizeof(T));
      p_ = nullptr, n_ = 0;
      DIPACO_CUDA(cudaMalloc(&p_, n * sizeof(T)));
      n_ = n;
      tally_.add(n * sizeof(T));
    }
    return p_;
  }

 private:
  Tally& tally_;
  T* p_ = nullptr;
  size_t n_ = 0;
};

class CudaKernels final : public Kernels {
 public:
  explicit CudaKernels(int device) : device_(device) {
    DIPACO_CUDA(cudaSetDevice(device));
    DIPACO_CUDA(cudaGetDeviceProperties(&props_, device));
    DIPACO_CUBLAS(cublasCreate(&blas_));
    DIPACO_CUBLAS(cublasSetStream(blas_, kStream));
    DIPACO_CUBLAS(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));  // TF32 only where a gemm asks (compute type)
    DIPACO_CUBLAS(cublasSetWorkspace(blas_, workspace_.get(kBlasWorkspace), kBlasWorkspace));
    reduce_.get(cuda::kReduceScratch);
  }
  ~CudaKernels() override { cublasDestroy(blas_); }

  std::string name() const override { return "cuda"; }
  bool device_memory() const override { return true; }

  void* alloc_bytes(size_t bytes) override {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 256));
    if (e != cudaSuccess) {
      size_t free_b = 0, total_b = 0;
      cudaGetLastError();
      cudaMemGetInfo(&free_b, &total_b);
      throw std::runtime_error("cudaMalloc of " + std::to_string(bytes >> 20) + " MiB on GPU " + std::to_string(device_) +
                               " (" + props_.name + ", " + std::to_string(free_b >> 20) + " MiB free of " +
                               std::to_string(total_b >> 20) + "): " + cudaGetErrorString(e));
    }
    DIPACO_CUDA(cudaMemset(p, 0, bytes));
    sizes_[p] = std::max<size_t>(bytes, 256);
    tally_.add(sizes_[p]);
    return p;
  }
  // Called from destructors (DeviceBuffer), so it reports instead of throwing:
  // a throw there would terminate and hide the error that started the unwinding.
  void release(void* p) override {
    if (auto it = sizes_.find(p); it != sizes_.end()) tally_.remove(it->second), sizes_.erase(it);
    cudaError_t e = cudaFree(p);
    if (e != cudaSuccess) std::fprintf(stderr, "dipaco: cudaFree failed: %s\n", cudaGetErrorString(e));
  }
  void to_device(void* dst, const void* src, size_t bytes) override {
    if (bytes) DIPACO_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    if (bytes) DIPACO_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) DIPACO_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, kStream));
  }
  void zero(void* dst, size_t bytes) override {
    if (bytes) DIPACO_CUDA(cudaMemsetAsync(dst, 0, bytes, kStream));
  }
  void synchronize() override { DIPACO_CUDA(cudaDeviceSynchronize()); }
  size_t peak_device_bytes() const override { return tally_.peak; }

  void gemm(const GemmShape& s, const float* A, const float* B, float* C, const float* bias) override {
    if (s.M <= 0 || s.N <= 0 || s.batch <= 0 || s.batch2 <= 0) return;
    if (bias && (s.batch2 > 1 || s.ld_c))
      throw std::runtime_error("gemm: a bias needs a dense output with one batch level");
    float alpha = 1.0f, beta = s.accumulate ? 1.0f : 0.0f;
    if (bias) {  // C = bias (or C += bias), then the product accumulates onto it
      cuda::broadcast_bias(C, bias, s.batch, s.M, s.N, s.stride_c, !s.accumulate, kStream);
      beta = 1.0f;
    }
    if (s.K <= 0) {  // an empty product: only the bias and the old C remain
      if (beta == 0.0f)
        for (int o = 0; o < s.batch2; ++o)
          for (int b = 0; b < s.batch; ++b)
            for (int r = 0; r < s.M; ++r)
              zero(C + size_t(o) * s.stride2_c + size_t(b) * s.stride_c + size_t(r) * s.ldc(), sizeof(float) * s.N);
      return;
    }
    const void *a = A, *b = B;
    cudaDataType_t type = CUDA_R_32F;
    size_t esize = sizeof(float);
    if (s.precision == Precision::bf16) {
      // An operand the caller rounded already (GemmShape::a_bf16, b_bf16) is used as it is.
      auto rounded = [](const uint16_t* copy, const float* x, size_t n, Scratch<__nv_bfloat16>& buf) -> const void* {
        if (copy) return copy;
        cuda::to_bf16(buf.get(n), x, n, kStream);
        return buf.get(n);
      };
      a = rounded(s.a_bf16, A, s.extent_a(), a_bf16_), b = rounded(s.b_bf16, B, s.extent_b(), b_bf16_);
      type = CUDA_R_16BF, esize = sizeof(__nv_bfloat16);
    }
    // cuBLAS is column-major: row-major C = op(A) op(B) is column-major
    // C^T = op(B)^T op(A)^T, so B goes first and the transposes carry over;
    // a row pitch is the column-major leading dimension. The outer batch is a loop.
    const cublasOperation_t op_b = s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_a = s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasComputeType_t compute = s.precision == Precision::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    for (int o = 0; o < s.batch2; ++o) {
      const char* ao = static_cast<const char*>(a) + size_t(o) * s.stride2_a * esize;
      const char* bo = static_cast<const char*>(b) + size_t(o) * s.stride2_b * esize;
      float* co = C + size_t(o) * s.stride2_c;
      DIPACO_CUBLAS(cublasGemmStridedBatchedEx(blas_, op_b, op_a, s.N, s.M, s.K, &alpha, bo, type, int(s.ldb()),
                                               s.stride_b, ao, type, int(s.lda()), s.stride_a, &beta, co, CUDA_R_32F,
                                               int(s.ldc()), s.stride_c, s.batch, compute,
                                               CUBLAS_GEMM_DEFAULT));
    }
    if (cuda::sync_after_launch()) DIPACO_CUDA(cudaDeviceSynchronize());
  }

  void to_bf16(uint16_t* out, const float* in, size_t n) override {
    cuda::to_bf16(reinterpret_cast<__nv_bfloat16*>(out), in, n, kStream);
  }

  void encoder_forward(float* out, const int32_t* tok, const float* wte, const float* wpe, int N, int T, int C) override {
    cuda::encoder_forward(out, tok, wte, wpe, N, T, C, kStream);
  }
  void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tok, int N, int T, int C) override {
    cuda::encoder_backward(dwte, dwpe, dout, tok, N, T, C, kStream);
  }

  void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int N,
                         int C) override {
    cuda::layernorm_forward(out, mean, rstd, x, w, b, N, C, kStream);
  }
  void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                          const float* mean, const float* rstd, int N, int C) override {
    float* partial = partial_.get(2 * size_t(cuda::column_chunks(N)) * C);
    cuda::layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, C, partial, kStream);
  }

  void gelu_forward(float* out, const float* x, size_t n) override { cuda::gelu_forward(out, x, n, kStream); }
  void gelu_backward(float* dx, const float* x, const float* dout, size_t n) override {
    cuda::gelu_backward(dx, x, dout, n, kStream);
  }
  void add(float* out, const float* a, const float* b, size_t n) override { cuda::add(out, a, b, n, kStream); }
  void bias_backward(float* dbias, const float* dout, int M, int N) override {
    float* partial = partial_.get(size_t(cuda::column_chunks(M)) * N);
    cuda::bias_backward(dbias, dout, M, N, partial, kStream);
  }

  void causal_softmax_forward(float* att, const float* scores, int BH, int T, float scale) override {
    cuda::causal_softmax_forward(att, scores, BH, T, scale, kStream);
  }
  void causal_softmax_backward(float* dscores, const float* datt, const float* att, int BH, int T, float scale) override {
    cuda::causal_softmax_backward(dscores, datt, att, BH, T, scale, kStream);
  }
  // Flash attention (flash_attention.cu): no [B, H, T, T] buffer, no head reshapes.
  // DIPACO_CUDA_ATTENTION=composed keeps the matmuls and softmax it replaced, for
  // the benchmark's before/after rows (scripts/gpu-check).
  bool has_fused_attention(int head_size) const override { return !composed_attention_ && head_size <= cuda::kMaxHead; }
  void fused_attention_forward(float* out, float* att, const float* qkv, int B, int T, int H, int D, float scale,
                               Precision p) override {
    cuda::flash_attention_forward(out, att, qkv, B, T, H, D, scale, tensor_core_smem(p), kStream);
  }
  void fused_attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* att,
                                int B, int T, int H, int D, float scale, Precision p) override {
    float* rowdot = rowdot_.get(size_t(B) * H * T);
    cuda::flash_attention_backward(dqkv, dout, qkv, out, att, rowdot, B, T, H, D, scale, tensor_core_smem(p), kStream);
  }

  // bf16 attention may use the tensor cores up to the device's opt-in shared memory per block.
  size_t tensor_core_smem(Precision p) const { return p == Precision::bf16 ? props_.sharedMemPerBlockOptin : 0; }

  void softmax_crossentropy_forward(float* probs, float* loss, const int32_t* target, int N, int V) override {
    cuda::softmax_crossentropy_forward(probs, loss, target, N, V, kStream);
  }
  void softmax_crossentropy_backward(float* probs, const int32_t* target, int N, int V, float scale) override {
    cuda::softmax_crossentropy_backward(probs, target, N, V, scale, kStream);
  }

  double sum(const float* x, size_t n) override { return cuda::sum(x, n, false, reduce_.get(0), kStream); }
  double sum_squares(const float* x, size_t n) override { return cuda::sum(x, n, true, reduce_.get(0), kStream); }
  void scale(float* x, float s, size_t n) override { cuda::scale(x, s, n, kStream); }

  void adamw(float* p, const float* g, float* m, float* v, size_t n, float lr, float beta1, float beta2, float eps,
             float weight_decay, long t) override {
    const auto [c1, c2] = bias_corrections(beta1, beta2, t);
    cuda::adamw(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, c1, c2, kStream);
  }
  // One launch per kAdamwRuns runs instead of one per tensor.
  void adamw_runs(float* p, const float* g, float* m, float* v, const std::vector<AdamwRun>& runs, float lr,
                  float beta1, float beta2, float eps, long t) override {
    const auto [c1, c2] = bias_corrections(beta1, beta2, t);
    for (size_t first = 0; first < runs.size(); first += cuda::kAdamwRuns) {
      cuda::AdamwRunTable table{};
      size_t largest = 0;
      table.count = int(std::min<size_t>(cuda::kAdamwRuns, runs.size() - first));
      for (int i = 0; i < table.count; ++i) {
        const AdamwRun& r = runs[first + i];
        table.offset[i] = r.offset, table.size[i] = r.size, table.weight_decay[i] = r.weight_decay;
        largest = std::max(largest, r.size);
      }
      cuda::adamw_runs(p, g, m, v, table, largest, lr, beta1, beta2, eps, c1, c2, kStream);
    }
  }
  void weighted_difference(float* out, const float* anchor, const float* x, float w, size_t n) override {
    cuda::weighted_difference(out, anchor, x, w, n, kStream);
  }
  void outer_nesterov(float* anchor, float* mom, const float* delta, size_t n, float lr, float mu) override {
    cuda::outer_nesterov(anchor, mom, delta, n, lr, mu, kStream);
  }

 private:
  int device_;
  bool composed_attention_ = [] {
    const char* v = std::getenv("DIPACO_CUDA_ATTENTION");
    return v && std::string(v) == "composed";
  }();
  cudaDeviceProp props_{};
  cublasHandle_t blas_ = nullptr;
  Tally tally_;
  std::unordered_map<void*, size_t> sizes_;  // alloc_bytes's blocks
  Scratch<char> workspace_{tally_};
  Scratch<__nv_bfloat16> a_bf16_{tally_}, b_bf16_{tally_};
  Scratch<float> partial_{tally_}, rowdot_{tally_};
  Scratch<double> reduce_{tally_};
};

}  // namespace

std::unique_ptr<Kernels> make_cuda_kernels(int local_rank) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the error so later runtime calls do not see it
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    throw std::runtime_error(std::string("run.device = cuda but no CUDA device is visible: ") +
                             (e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports 0 devices") +
                             (visible ? std::string(" (CUDA_VISIBLE_DEVICES=") + visible + ")" : std::string()));
  }
  // One GPU per rank: ranks of a node take the node's GPUs in turn.
  return std::make_unique<CudaKernels>(((local_rank % count) + count) % count);
}

}  // namespace dipaco
