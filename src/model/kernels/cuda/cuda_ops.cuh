// Launchers for the CUDA kernels behind CudaKernels (cuda_kernels.cu), one per
// Kernels method that is not a plain memory operation or a matmul. Shapes and
// semantics are those of include/dipaco/model/kernels.hpp. All work is queued on
// `stream`; only the reductions wait for it.
//
// Every reduction has a fixed order for a given shape (no floating-point
// atomics), so a run on one GPU is bitwise reproducible.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace dipaco::cuda {

// Column sums run in two passes over row chunks; the partial sums need
// column_chunks(rows) * cols floats of scratch per summed quantity.
int column_chunks(int rows);
// Double-precision totals (sum, sum_squares) need this many doubles of scratch.
constexpr int kReduceScratch = 1025;

void to_bf16(__nv_bfloat16* out, const float* in, size_t n, cudaStream_t stream);
// C[b] = bias (set) or C[b] += bias (!set), broadcast over the M rows of each of batch matrices.
void broadcast_bias(float* C, const float* bias, int batch, int M, int N, long stride_c, bool set, cudaStream_t stream);

void encoder_forward(float* out, const int32_t* tok, const float* wte, const float* wpe, int N, int T, int C,
                     cudaStream_t stream);
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tok, int N, int T, int C,
                      cudaStream_t stream);

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int N,
                       int C, cudaStream_t stream);
void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                        const float* mean, const float* rstd, int N, int C, float* partial, cudaStream_t stream);

void gelu_forward(float* out, const float* x, size_t n, cudaStream_t stream);
void gelu_backward(float* dx, const float* x, const float* dout, size_t n, cudaStream_t stream);
void add(float* out, const float* a, const float* b, size_t n, cudaStream_t stream);
void bias_backward(float* dbias, const float* dout, int M, int N, float* partial, cudaStream_t stream);


void causal_softmax_forward(float* att, const float* scores, int BH, int T, float scale, cudaStream_t stream);
void causal_softmax_backward(float* dscores, const float* datt, const float* att, int BH, int T, float scale,
                             cudaStream_t stream);
void softmax_crossentropy_forward(float* probs, float* loss, const int32_t* target, int N, int V, cudaStream_t stream);
void softmax_crossentropy_backward(float* probs, const int32_t* target, int N, int V, float scale,
                                   cudaStream_t stream);

// Sum of x (or of x^2) in double; waits for the stream and returns on the host.
double sum(const float* x, size_t n, bool squares, double* scratch, cudaStream_t stream);
void scale(float* x, float s, size_t n, cudaStream_t stream);

// c1, c2: the bias corrections 1/(1-beta^t), computed on the host as the CPU does.
void adamw(float* p, const float* g, float* m, float* v, size_t n, float lr, float beta1, float beta2, float eps,
           float weight_decay, float c1, float c2, cudaStream_t stream);
// Up to kAdamwRuns stretches of one arena, passed by value as a kernel argument.
constexpr int kAdamwRuns = 96;
struct AdamwRunTable {
  size_t offset[kAdamwRuns], size[kAdamwRuns];
  float weight_decay[kAdamwRuns];
  int count;
};
// adamw over every run of the table in one launch (a row of blocks per run).
void adamw_runs(float* p, const float* g, float* m, float* v, const AdamwRunTable& runs, size_t largest, float lr,
                float beta1, float beta2, float eps, float c1, float c2, cudaStream_t stream);
void weighted_difference(float* out, const float* anchor, const float* x, float w, size_t n, cudaStream_t stream);
void outer_nesterov(float* anchor, float* mom, const float* delta, size_t n, float lr, float mu, cudaStream_t stream);

}  // namespace dipaco::cuda
