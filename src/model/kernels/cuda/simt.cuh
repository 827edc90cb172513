// The primitives the flash attention kernels (flash_attention_kernels.cuh,
// flash_attention_tc_kernels.cuh) are written against, on the GPU: CUDA's own
// built-ins, the block's dynamic shared memory as a pointer, bf16, and one
// warp-wide tensor-core product of 16x16 tiles (WMMA). tests/unit/simt_host.hpp
// gives the same names on the host.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <type_traits>

#define DIPACO_SIMT_INLINE __device__ __forceinline__

namespace dipaco::cuda {

using bf16 = __nv_bfloat16;

DIPACO_SIMT_INLINE float* dynamic_smem() {
  extern __shared__ __align__(128) float dipaco_dynamic_smem[];
  return dipaco_dynamic_smem;
}

DIPACO_SIMT_INLINE bf16 to_bf16(float x) { return __float2bfloat16_rn(x); }

// c (a 16x16 fp32 tile, pitch ldc) = (accumulate ? c : 0) + A B over K (a
// multiple of 16) on the tensor cores, fp32 accumulation. A is 16xK bf16, row
// major (pitch lda); B is Kx16 bf16, row major (pitch ldb), or with kTransB
// stored as its transpose: row n of b holds column n of B. Called by all 32
// lanes of a warp; pointers 32-byte aligned, pitches multiples of 8 (bf16) and
// 4 (fp32) elements, as WMMA requires.
template <bool kTransB>
DIPACO_SIMT_INLINE void mma_tile(float* c, int ldc, const bf16* a, int lda, const bf16* b, int ldb, int K,
                                 bool accumulate) {
  namespace w = nvcuda::wmma;
  using LayoutB = typename std::conditional<kTransB, w::col_major, w::row_major>::type;
  w::fragment<w::accumulator, 16, 16, 16, float> acc;
  if (accumulate)
    w::load_matrix_sync(acc, c, ldc, w::mem_row_major);
  else
    w::fill_fragment(acc, 0.0f);
  for (int k = 0; k < K; k += 16) {
    w::fragment<w::matrix_a, 16, 16, 16, bf16, w::row_major> fa;
    w::fragment<w::matrix_b, 16, 16, 16, bf16, LayoutB> fb;
    w::load_matrix_sync(fa, a + k, lda);
    w::load_matrix_sync(fb, kTransB ? b + k : b + size_t(k) * ldb, ldb);
    w::mma_sync(acc, fa, fb, acc);
  }
  w::store_matrix_sync(c, acc, ldc, w::mem_row_major);
}

}  // namespace dipaco::cuda
