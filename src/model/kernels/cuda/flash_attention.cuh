// Causal self-attention on the GPU without the [B, H, T, T] matrix: tiles of
// queries against streamed tiles of keys and values, an online softmax, and a
// backward pass that recomputes the probabilities from each row's max and 1/sum
// (flash attention). The contract is Kernels::fused_attention_forward/backward's:
// heads are read straight out of the [B, T, 3C] qkv rows and written into the
// [B, T, C] output rows, stats is [B, H, T, 2] (max of the scaled scores, 1/sum),
// computed in fp32 (or, in bf16, with bf16 operands on the tensor cores).
// Head sizes up to kMaxHead.
//
// Deterministic: every sum has a fixed order for a given shape. The backward
// therefore runs two kernels (dK and dV per key tile, dQ per query tile)
// instead of accumulating dQ with atomics.
#pragma once
#include <cuda_runtime.h>

#include "dipaco/model/kernels.hpp"

namespace dipaco::cuda {

constexpr int kMaxHead = kCudaFusedAttentionMaxHead;

// tc_smem_limit: the shared memory a block may have on this device where the
// tensor-core kernels are wanted (bf16 operands, fp32 sums), 0 where they are
// not; they run where their tiles fit it, else the fp32 CUDA-core kernels do.
void flash_attention_forward(float* out, float* stats, const float* qkv, int B, int T, int H, int D, float scale,
                             size_t tc_smem_limit, cudaStream_t stream);
// rowdot: B*H*T floats of scratch (each row's dot(dout, out)).
void flash_attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* stats,
                              float* rowdot, int B, int T, int H, int D, float scale, size_t tc_smem_limit,
                              cudaStream_t stream);

}  // namespace dipaco::cuda
