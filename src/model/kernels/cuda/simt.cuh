// The primitives flash_attention_kernels.cuh is written against, on the GPU:
// CUDA's own built-ins, plus the block's dynamic shared memory as a pointer
// (tests/unit/simt_host.hpp gives the same names on the host).
#pragma once
#include <cuda_runtime.h>

#define DIPACO_SIMT_INLINE __device__ __forceinline__

namespace dipaco::cuda {

DIPACO_SIMT_INLINE float* dynamic_smem() {
  extern __shared__ __align__(16) float dipaco_dynamic_smem[];
  return dipaco_dynamic_smem;
}

}  // namespace dipaco::cuda
