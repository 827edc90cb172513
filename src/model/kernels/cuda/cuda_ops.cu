// CUDA kernels for the non-matmul Kernels primitives; see cuda_ops.cuh.
// Row-wise operations (layernorm, softmaxes) use one warp per row; column sums
// (bias and layernorm parameter gradients) use two deterministic passes.
#include <algorithm>

#include "cuda_check.cuh"
#include "cuda_ops.cuh"

namespace dipaco::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;
constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2/pi)

// Blocks for a grid-stride loop over n elements: enough to fill the GPU,
// capped so that each thread does several elements of a large tensor.
int grid_for(size_t n) { return int(std::clamp<size_t>((n + kThreads - 1) / kThreads, 1, 8192)); }
int rows_grid(int rows) { return (rows + kWarpsPerBlock - 1) / kWarpsPerBlock; }

__device__ __forceinline__ size_t global_index() { return size_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t grid_stride() { return size_t(gridDim.x) * blockDim.x; }
// For one-warp-per-row kernels: the row of this warp and the lane within it.
__device__ __forceinline__ int warp_row() { return blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; }
__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }

template <typename F>
__device__ __forceinline__ F warp_sum(F v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}
// Sum over a block of kThreads threads; the result is valid in thread 0.
__device__ double block_sum(double v) {
  __shared__ double part[kWarpsPerBlock];
  v = warp_sum(v);
  if (lane_id() == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  double s = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kWarpsPerBlock; ++w) s += part[w];
  return s;
}

__global__ void to_bf16_kernel(__nv_bfloat16* out, const float* in, size_t n) {
  for (size_t i = global_index(); i < n; i += grid_stride()) out[i] = __float2bfloat16_rn(in[i]);
}

__global__ void broadcast_bias_kernel(float* C, const float* bias, size_t per_batch, size_t total, int N, long stride_c,
                                      bool set) {
  for (size_t i = global_index(); i < total; i += grid_stride()) {
    size_t b = i / per_batch, r = i % per_batch;
    float* c = C + b * size_t(stride_c) + r;
    float x = bias[r % N];
    *c = set ? x : *c + x;
  }
}

__global__ void encoder_forward_kernel(float* out, const int32_t* tok, const float* wte, const float* wpe, int N, int T,
                                       int C) {
  for (size_t i = global_index(); i < size_t(N) * C; i += grid_stride()) {
    size_t n = i / C, c = i % C;
    out[i] = wte[size_t(tok[n]) * C + c] + wpe[(n % T) * C + c];
  }
}

// dwte: block g owns every token v with v % gridDim.x == g, so no two blocks
// touch the same row. It walks the batch in order, compacting its rows into
// shared memory (ballots keep them in order), and each thread sums one
// channel in a register, flushing when the token changes: deterministic, and
// for a byte vocabulary one flush per channel.
__global__ void encoder_backward_wte_kernel(float* dwte, const float* dout, const int32_t* tok, int N, int C) {
  __shared__ int rows[kThreads], toks[kThreads], warp_count[kWarpsPerBlock];
  const int lane = lane_id(), warp = threadIdx.x / 32;
  const unsigned groups = gridDim.x, group = blockIdx.x;
  for (int c0 = 0; c0 < C; c0 += kThreads) {
    const int c = c0 + threadIdx.x;
    float acc = 0.0f;
    int cur = -1;  // the token acc belongs to
    for (int base = 0; base < N; base += kThreads) {
      const int n = base + threadIdx.x;
      const int t = n < N ? tok[n] : 0;
      const bool mine = n < N && unsigned(t) % groups == group;
      const unsigned ballot = __ballot_sync(kFull, mine);
      if (lane == 0) warp_count[warp] = __popc(ballot);
      __syncthreads();
      int offset = 0, total = 0;
      for (int w = 0; w < kWarpsPerBlock; ++w) offset += w < warp ? warp_count[w] : 0, total += warp_count[w];
      if (mine) {
        int at = offset + __popc(ballot & ((1u << lane) - 1u));
        rows[at] = n, toks[at] = t;
      }
      __syncthreads();
      if (c < C)
        for (int i = 0; i < total; ++i) {
          if (toks[i] != cur) {
            if (cur >= 0) dwte[size_t(cur) * C + c] += acc;
            acc = 0.0f, cur = toks[i];
          }
          acc += dout[size_t(rows[i]) * C + c];
        }
      __syncthreads();  // rows and toks are rewritten by the next chunk
    }
    if (c < C && cur >= 0) dwte[size_t(cur) * C + c] += acc;
  }
}

// dwpe[t,c] += sum over the rows n = t, t+T, ... (the batch), in order.
__global__ void encoder_backward_wpe_kernel(float* dwpe, const float* dout, int N, int T, int C) {
  for (size_t i = global_index(); i < size_t(T) * C; i += grid_stride()) {
    size_t t = i / C, c = i % C;
    float s = 0.0f;
    for (size_t n = t; n < size_t(N); n += T) s += dout[n * C + c];
    dwpe[i] += s;
  }
}

__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* x, const float* w,
                                         const float* b, int N, int C) {
  const int row = warp_row(), lane = lane_id();
  if (row >= N) return;
  const float* xr = x + size_t(row) * C;
  float s = 0.0f;
  for (int c = lane; c < C; c += 32) s += xr[c];
  const float m = warp_sum(s) / C;
  float v = 0.0f;
  for (int c = lane; c < C; c += 32) v += (xr[c] - m) * (xr[c] - m);
  const float r = 1.0f / sqrtf(warp_sum(v) / C + 1e-5f);
  float* o = out + size_t(row) * C;
  for (int c = lane; c < C; c += 32) o[c] = (xr[c] - m) * r * w[c] + b[c];
  if (lane == 0) mean[row] = m, rstd[row] = r;
}

__global__ void layernorm_backward_dx_kernel(float* dx, const float* dout, const float* x, const float* w,
                                             const float* mean, const float* rstd, int N, int C) {
  const int row = warp_row(), lane = lane_id();
  if (row >= N) return;
  const float* xr = x + size_t(row) * C;
  const float* dr = dout + size_t(row) * C;
  const float m = mean[row], r = rstd[row];
  float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
  for (int c = lane; c < C; c += 32) {
    float dnorm = w[c] * dr[c];
    dnorm_mean += dnorm, dnorm_norm_mean += dnorm * (xr[c] - m) * r;
  }
  dnorm_mean = warp_sum(dnorm_mean) / C, dnorm_norm_mean = warp_sum(dnorm_norm_mean) / C;
  float* dxr = dx + size_t(row) * C;
  for (int c = lane; c < C; c += 32) dxr[c] += (w[c] * dr[c] - dnorm_mean - (xr[c] - m) * r * dnorm_norm_mean) * r;
}

// Column sums, pass 1: block (32 columns x 8 row lanes) sums one chunk of rows
// into partial[chunk, col]. With kNorm it sums dout * norm(x) into pa and dout
// into pb (layernorm weight and bias gradients); otherwise dout into pa.
constexpr int kColLanes = 8;
template <bool kNorm>
__global__ void column_partials_kernel(float* pa, float* pb, const float* dout, const float* x, const float* mean,
                                       const float* rstd, int rows, int cols, int rows_per_chunk) {
  __shared__ float sa[kColLanes][33], sb[kColLanes][33];
  const int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * 32 + tx;
  const int r0 = blockIdx.y * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
  float a = 0.0f, b = 0.0f;
  if (c < cols)
    for (int r = r0 + ty; r < r1; r += kColLanes) {
      size_t i = size_t(r) * cols + c;
      float d = dout[i];
      if constexpr (kNorm) {
        a += (x[i] - mean[r]) * rstd[r] * d, b += d;
      } else {
        a += d;
      }
    }
  sa[ty][tx] = a, sb[ty][tx] = b;
  __syncthreads();
  if (ty == 0 && c < cols) {
    for (int y = 1; y < kColLanes; ++y) a += sa[y][tx], b += sb[y][tx];
    pa[size_t(blockIdx.y) * cols + c] = a;
    if constexpr (kNorm) pb[size_t(blockIdx.y) * cols + c] = b;
  }
}

// Column sums, pass 2: out[c] += sum over chunks, in chunk order.
__global__ void column_finish_kernel(float* out, const float* partial, int chunks, int cols) {
  for (size_t c = global_index(); c < size_t(cols); c += grid_stride()) {
    float s = 0.0f;
    for (int k = 0; k < chunks; ++k) s += partial[size_t(k) * cols + c];
    out[c] += s;
  }
}

void column_sums(float* out_a, float* out_b, const float* dout, const float* x, const float* mean, const float* rstd,
                 int rows, int cols, float* partial, cudaStream_t stream) {
  const int chunks = column_chunks(rows), per = (rows + chunks - 1) / chunks;
  float *pa = partial, *pb = partial + size_t(chunks) * cols;
  dim3 grid((cols + 31) / 32, chunks), block(32, kColLanes);
  if (x)
    column_partials_kernel<true><<<grid, block, 0, stream>>>(pa, pb, dout, x, mean, rstd, rows, cols, per);
  else
    column_partials_kernel<false><<<grid, block, 0, stream>>>(pa, pb, dout, x, mean, rstd, rows, cols, per);
  DIPACO_LAUNCHED();
  column_finish_kernel<<<grid_for(cols), kThreads, 0, stream>>>(out_a, pa, chunks, cols);
  DIPACO_LAUNCHED();
  if (x) {
    column_finish_kernel<<<grid_for(cols), kThreads, 0, stream>>>(out_b, pb, chunks, cols);
    DIPACO_LAUNCHED();
  }
}

__device__ __forceinline__ float gelu_tanh(float v) { return tanhf(kGeluC * (v + 0.044715f * v * v * v)); }

__global__ void gelu_forward_kernel(float* out, const float* x, size_t n) {
  for (size_t i = global_index(); i < n; i += grid_stride()) {
    float v = x[i];
    out[i] = 0.5f * v * (1.0f + gelu_tanh(v));
  }
}

__global__ void gelu_backward_kernel(float* dx, const float* x, const float* dout, size_t n) {
  for (size_t i = global_index(); i < n; i += grid_stride()) {
    float v = x[i], t = gelu_tanh(v), sech2 = 1.0f - t * t;
    dx[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * v * sech2 * kGeluC * (1.0f + 3.0f * 0.044715f * v * v));
  }
}

__global__ void add_kernel(float* out, const float* a, const float* b, size_t n) {
  for (size_t i = global_index(); i < n; i += grid_stride()) out[i] = a[i] + b[i];
}

// Indexed by qkv [B,T,3,H,D]: reads (or writes) stay coalesced on the wide side.
// In place is allowed (att == scores): each element is read before the same lane writes it.
__global__ void causal_softmax_forward_kernel(float* att, const float* scores, int rows, int T, float scale) {
  const int row = warp_row(), lane = lane_id();
  if (row >= rows) return;
  const int t = row % T;
  const float* s = scores + size_t(row) * T;
  float* a = att + size_t(row) * T;
  float mx = -INFINITY;
  for (int j = lane; j <= t; j += 32) mx = fmaxf(mx, s[j] * scale);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int j = lane; j <= t; j += 32) {
    float e = expf(s[j] * scale - mx);
    a[j] = e, sum += e;
  }
  const float inv = 1.0f / warp_sum(sum);
  for (int j = lane; j < T; j += 32) a[j] = j <= t ? a[j] * inv : 0.0f;
}

__global__ void causal_softmax_backward_kernel(float* dscores, const float* datt, const float* att, int rows, int T,
                                               float scale) {
  const int row = warp_row(), lane = lane_id();
  if (row >= rows) return;
  const int t = row % T;
  const float* a = att + size_t(row) * T;
  const float* d = datt + size_t(row) * T;
  float* ds = dscores + size_t(row) * T;
  float dot = 0.0f;
  for (int j = lane; j <= t; j += 32) dot += a[j] * d[j];
  dot = warp_sum(dot);
  for (int j = lane; j < T; j += 32) ds[j] = j <= t ? scale * a[j] * (d[j] - dot) : 0.0f;
}

__global__ void softmax_crossentropy_forward_kernel(float* probs, float* loss, const int32_t* target, int N, int V) {
  const int row = warp_row(), lane = lane_id();
  if (row >= N) return;
  float* p = probs + size_t(row) * V;
  float mx = -INFINITY;
  for (int j = lane; j < V; j += 32) mx = fmaxf(mx, p[j]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int j = lane; j < V; j += 32) {
    float e = expf(p[j] - mx);
    p[j] = e, sum += e;
  }
  const float inv = 1.0f / warp_sum(sum);
  for (int j = lane; j < V; j += 32) p[j] *= inv;
  __syncwarp();  // p[target] was written by another lane
  if (lane == 0) loss[row] = -logf(fmaxf(p[target[row]], 1e-30f));
}

__global__ void softmax_crossentropy_backward_kernel(float* probs, const int32_t* target, int N, int V, float scale) {
  for (size_t i = global_index(); i < size_t(N) * V; i += grid_stride()) {
    size_t n = i / V, j = i % V;
    probs[i] = (probs[i] - (int(j) == target[n] ? 1.0f : 0.0f)) * scale;
  }
}

__global__ void sum_partials_kernel(double* partial, const float* x, size_t n, bool squares) {
  double s = 0.0;
  for (size_t i = global_index(); i < n; i += grid_stride()) {
    double v = x[i];
    s += squares ? v * v : v;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_finish_kernel(double* out, const double* partial, int count) {
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

__global__ void scale_kernel(float* x, float s, size_t n) {
  for (size_t i = global_index(); i < n; i += grid_stride()) x[i] *= s;
}

__device__ __forceinline__ void adamw_element(float* p, const float* g, float* m, float* v, size_t i, float lr, float b1,
                                              float b2, float eps, float wd, float c1, float c2) {
  float gi = g[i];
  float mi = b1 * m[i] + (1.0f - b1) * gi;
  float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
  m[i] = mi, v[i] = vi;
  p[i] -= lr * ((mi * c1) / (sqrtf(vi * c2) + eps) + wd * p[i]);
}

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2,
                             float eps, float wd, float c1, float c2) {
  for (size_t i = global_index(); i < n; i += grid_stride()) adamw_element(p, g, m, v, i, lr, b1, b2, eps, wd, c1, c2);
}

// Row y of blocks walks run y; rows of short runs finish early.
__global__ void adamw_runs_kernel(float* p, const float* g, float* m, float* v, const AdamwRunTable runs, float lr,
                                  float b1, float b2, float eps, float c1, float c2) {
  const int r = blockIdx.y;
  const size_t off = runs.offset[r], n = runs.size[r];
  const float wd = runs.weight_decay[r];
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    adamw_element(p, g, m, v, off + i, lr, b1, b2, eps, wd, c1, c2);
}

__global__ void weighted_difference_kernel(float* out, const float* anchor, const float* x, float w, size_t n) {
  for (size_t i = global_index(); i < n; i += grid_stride()) out[i] += w * (anchor[i] - x[i]);
}

__global__ void outer_nesterov_kernel(float* anchor, float* mom, const float* delta, size_t n, float lr, float mu) {
  for (size_t i = global_index(); i < n; i += grid_stride()) {
    float mo = mu * mom[i] + delta[i];
    mom[i] = mo;
    anchor[i] -= lr * (delta[i] + mu * mo);
  }
}

}  // namespace

// Chunks of at least 64 rows, at most 128 chunks: enough blocks to fill the
// GPU for the model's shapes, and a small second pass.
int column_chunks(int rows) { return std::clamp((rows + 63) / 64, 1, 128); }

#define DIPACO_ELEMENTWISE(n, kernel, ...)                              \
  do {                                                                  \
    if ((n) == 0) return;                                               \
    kernel<<<grid_for(n), kThreads, 0, stream>>>(__VA_ARGS__);          \
    DIPACO_LAUNCHED();                                                  \
  } while (0)
#define DIPACO_PER_ROW(rows, kernel, ...)                               \
  do {                                                                  \
    if ((rows) <= 0) return;                                            \
    kernel<<<rows_grid(rows), kThreads, 0, stream>>>(__VA_ARGS__);      \
    DIPACO_LAUNCHED();                                                  \
  } while (0)

void to_bf16(__nv_bfloat16* out, const float* in, size_t n, cudaStream_t stream) {
  DIPACO_ELEMENTWISE(n, to_bf16_kernel, out, in, n);
}

void broadcast_bias(float* C, const float* bias, int batch, int M, int N, long stride_c, bool set, cudaStream_t stream) {
  const size_t per = size_t(M) * N, total = per * batch;
  DIPACO_ELEMENTWISE(total, broadcast_bias_kernel, C, bias, per, total, N, stride_c, set);
}

void encoder_forward(float* out, const int32_t* tok, const float* wte, const float* wpe, int N, int T, int C,
                     cudaStream_t stream) {
  DIPACO_ELEMENTWISE(size_t(N) * C, encoder_forward_kernel, out, tok, wte, wpe, N, T, C);
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tok, int N, int T, int C,
                      cudaStream_t stream) {
  if (N <= 0 || C <= 0) return;
  encoder_backward_wte_kernel<<<256, kThreads, 0, stream>>>(dwte, dout, tok, N, C);
  DIPACO_LAUNCHED();
  DIPACO_ELEMENTWISE(size_t(T) * C, encoder_backward_wpe_kernel, dwpe, dout, N, T, C);
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int N,
                       int C, cudaStream_t stream) {
  DIPACO_PER_ROW(N, layernorm_forward_kernel, out, mean, rstd, x, w, b, N, C);
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                        const float* mean, const float* rstd, int N, int C, float* partial, cudaStream_t stream) {
  if (N <= 0) return;
  column_sums(dw, db, dout, x, mean, rstd, N, C, partial, stream);
  DIPACO_PER_ROW(N, layernorm_backward_dx_kernel, dx, dout, x, w, mean, rstd, N, C);
}

void gelu_forward(float* out, const float* x, size_t n, cudaStream_t stream) {
  DIPACO_ELEMENTWISE(n, gelu_forward_kernel, out, x, n);
}
void gelu_backward(float* dx, const float* x, const float* dout, size_t n, cudaStream_t stream) {
  DIPACO_ELEMENTWISE(n, gelu_backward_kernel, dx, x, dout, n);
}
void add(float* out, const float* a, const float* b, size_t n, cudaStream_t stream) {
  DIPACO_ELEMENTWISE(n, add_kernel, out, a, b, n);
}

void bias_backward(float* dbias, const float* dout, int M, int N, float* partial, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  column_sums(dbias, nullptr, dout, nullptr, nullptr, nullptr, M, N, partial, stream);
}

void causal_softmax_forward(float* att, const float* scores, int BH, int T, float scale, cudaStream_t stream) {
  DIPACO_PER_ROW(BH * T, causal_softmax_forward_kernel, att, scores, BH * T, T, scale);
}
void causal_softmax_backward(float* dscores, const float* datt, const float* att, int BH, int T, float scale,
                             cudaStream_t stream) {
  DIPACO_PER_ROW(BH * T, causal_softmax_backward_kernel, dscores, datt, att, BH * T, T, scale);
}
void softmax_crossentropy_forward(float* probs, float* loss, const int32_t* target, int N, int V, cudaStream_t stream) {
  DIPACO_PER_ROW(N, softmax_crossentropy_forward_kernel, probs, loss, target, N, V);
}
void softmax_crossentropy_backward(float* probs, const int32_t* target, int N, int V, float scale,
                                   cudaStream_t stream) {
  DIPACO_ELEMENTWISE(size_t(N) * V, softmax_crossentropy_backward_kernel, probs, target, N, V, scale);
}

double sum(const float* x, size_t n, bool squares, double* scratch, cudaStream_t stream) {
  if (n == 0) return 0.0;
  // The block count depends on n alone, so the summation order does too.
  const int blocks = int(std::min<size_t>((n + 8 * kThreads - 1) / (8 * kThreads), kReduceScratch - 1));
  sum_partials_kernel<<<blocks, kThreads, 0, stream>>>(scratch, x, n, squares);
  DIPACO_LAUNCHED();
  sum_finish_kernel<<<1, kThreads, 0, stream>>>(scratch + kReduceScratch - 1, scratch, blocks);
  DIPACO_LAUNCHED();
  double result = 0.0;
  DIPACO_CUDA(cudaMemcpyAsync(&result, scratch + kReduceScratch - 1, sizeof(double), cudaMemcpyDeviceToHost, stream));
  DIPACO_CUDA(cudaStreamSynchronize(stream));
  return result;
}

void scale(float* x, float s, size_t n, cudaStream_t stream) { DIPACO_ELEMENTWISE(n, scale_kernel, x, s, n); }

void adamw(float* p, const float* g, float* m, float* v, size_t n, float lr, float beta1, float beta2, float eps,
           float weight_decay, float c1, float c2, cudaStream_t stream) {
  DIPACO_ELEMENTWISE(n, adamw_kernel, p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, c1, c2);
}
void adamw_runs(float* p, const float* g, float* m, float* v, const AdamwRunTable& runs, size_t largest, float lr,
                float beta1, float beta2, float eps, float c1, float c2, cudaStream_t stream) {
  if (runs.count == 0 || largest == 0) return;
  adamw_runs_kernel<<<dim3(grid_for(largest), runs.count), kThreads, 0, stream>>>(p, g, m, v, runs, lr, beta1, beta2,
                                                                                 eps, c1, c2);
  DIPACO_LAUNCHED();
}
void weighted_difference(float* out, const float* anchor, const float* x, float w, size_t n, cudaStream_t stream) {
  DIPACO_ELEMENTWISE(n, weighted_difference_kernel, out, anchor, x, w, n);
}
void outer_nesterov(float* anchor, float* mom, const float* delta, size_t n, float lr, float mu, cudaStream_t stream) {
  DIPACO_ELEMENTWISE(n, outer_nesterov_kernel, anchor, mom, delta, n, lr, mu);
}

}  // namespace dipaco::cuda
