// Flash attention's launchers; the kernels are in flash_attention_kernels.cuh.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "cuda_check.cuh"
#include "flash_attention.cuh"
#include "simt.cuh"
// after simt.cuh:
#include "flash_attention_kernels.cuh"
#include "flash_attention_tc_kernels.cuh"

namespace dipaco::cuda {
namespace {

using namespace flash;

// Launches kernel over (B*H, row tiles) with `bytes` of dynamic shared memory,
// above the default 48 KB: the kernel's limit is raised first (a host-side
// attribute, cheap beside the launch).
template <typename Kernel, typename... Args>
void launch(Kernel kernel, size_t bytes, int threads, int BH, int T, cudaStream_t stream, Args... args) {
  DIPACO_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  kernel<<<dim3(BH, (T + kTile - 1) / kTile), threads, bytes, stream>>>(args...);
  DIPACO_LAUNCHED();
}

// The head size padded to a multiple of 32 the kernels are built for.
int padded_head(int D) {
  if (D < 1 || D > kMaxHead)
    throw std::runtime_error("CUDA attention: head size " + std::to_string(D) + " is outside 1.." +
                             std::to_string(kMaxHead) + " (model.d_model / model.heads)");
  return D <= 32 ? 32 : D <= 64 ? 64 : 128;
}

// Whether the tensor-core kernels run: asked for (a limit above 0) and their
// tiles fit a block (the backward at DP = 128 needs Hopper's 227 KB).
template <int DP>
bool tensor_cores(size_t tc_smem_limit) {
  return std::max({tc_forward_smem<DP>(), tc_backward_kv_smem<DP>(), tc_backward_q_smem<DP>()}) <= tc_smem_limit;
}

template <int DP>
void forward_at(float* out, float* stats, const float* qkv, int B, int T, int H, int D, float scale,
                size_t tc_smem_limit, cudaStream_t s) {
  if (tensor_cores<DP>(tc_smem_limit))
    launch(flash_forward_tc_kernel<DP>, tc_forward_smem<DP>(), kTcThreads, B * H, T, s, out, stats, qkv, T, H, D, scale);
  else
    launch(flash_forward_kernel<DP>, forward_smem<DP>(), kThreads, B * H, T, s, out, stats, qkv, T, H, D, scale);
}

template <int DP>
void backward_at(float* dqkv, const float* dout, const float* qkv, const float* stats, const float* rowdot, int B, int T,
                 int H, int D, float scale, size_t tc_smem_limit, cudaStream_t s) {
  if (tensor_cores<DP>(tc_smem_limit)) {
    launch(flash_backward_kv_tc_kernel<DP>, tc_backward_kv_smem<DP>(), kTcThreads, B * H, T, s, dqkv, dout, qkv, stats,
           rowdot, T, H, D, scale);
    launch(flash_backward_q_tc_kernel<DP>, tc_backward_q_smem<DP>(), kTcThreads, B * H, T, s, dqkv, dout, qkv, stats,
           rowdot, T, H, D, scale);
    return;
  }
  launch(flash_backward_kv_kernel<DP>, backward_kv_smem<DP>(), kThreads, B * H, T, s, dqkv, dout, qkv, stats, rowdot, T,
         H, D, scale);
  launch(flash_backward_q_kernel<DP>, backward_q_smem<DP>(), kThreads, B * H, T, s, dqkv, dout, qkv, stats, rowdot, T,
         H, D, scale);
}

}  // namespace

void flash_attention_forward(float* out, float* stats, const float* qkv, int B, int T, int H, int D, float scale,
                             size_t tc_smem_limit, cudaStream_t stream) {
  if (B <= 0 || T <= 0 || H <= 0) return;
  switch (padded_head(D)) {
    case 32: return forward_at<32>(out, stats, qkv, B, T, H, D, scale, tc_smem_limit, stream);
    case 64: return forward_at<64>(out, stats, qkv, B, T, H, D, scale, tc_smem_limit, stream);
    default: return forward_at<128>(out, stats, qkv, B, T, H, D, scale, tc_smem_limit, stream);
  }
}

void flash_attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* stats,
                              float* rowdot, int B, int T, int H, int D, float scale, size_t tc_smem_limit, cudaStream_t stream) {
  if (B <= 0 || T <= 0 || H <= 0) return;
  const int DP = padded_head(D), rows = B * H * T;
  rowdot_kernel<<<(rows + kWarps - 1) / kWarps, kThreads, 0, stream>>>(rowdot, dout, out, B, T, H, D);
  DIPACO_LAUNCHED();
  switch (DP) {
    case 32: return backward_at<32>(dqkv, dout, qkv, stats, rowdot, B, T, H, D, scale, tc_smem_limit, stream);
    case 64: return backward_at<64>(dqkv, dout, qkv, stats, rowdot, B, T, H, D, scale, tc_smem_limit, stream);
    default: return backward_at<128>(dqkv, dout, qkv, stats, rowdot, B, T, H, D, scale, tc_smem_limit, stream);
  }
}

}  // namespace dipaco::cuda
