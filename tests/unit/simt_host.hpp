// A CUDA block emulator for device code written against simt.cuh's names
// (src/model/kernels/cuda/flash_attention_kernels.cuh): every CUDA thread of a
// block is a host thread, __syncthreads and __syncwarp are barriers, a warp
// shuffle goes through a per-block buffer between two warp barriers, and the
// blocks of a grid run one after another on one team of threads. Slow, and only for the shapes of
// tests, but it runs the kernels' own indexing, masks and synchronisation
// where there is no GPU: a missing barrier or a lane reading past its tile
// shows up here as a wrong result.
#pragma once
#include <math.h>

#include <algorithm>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <memory>
#include <new>
#include <thread>
#include <vector>

// Internal linkage: the CUDA build's host stubs of the same kernels may be
// linked into the same binary.
#define DIPACO_SIMT_INLINE static inline
#define __global__ static
#define __launch_bounds__(n)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct alignas(16) float4 {
  float x, y, z, w;
};

namespace simt_host {

template <typename T>
struct Aligned {
  using value_type = T;
  Aligned() = default;
  template <typename U>
  Aligned(const Aligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(128))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(128)); }
  bool operator==(const Aligned&) const { return true; }
};

struct Block {
  Block(int threads, size_t smem_bytes) : all(threads), smem((smem_bytes + 3) / 4), lanes(threads) {
    for (int w = 0; w < threads / 32; ++w) warps.push_back(std::make_unique<std::barrier<>>(32));
  }
  std::barrier<> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<float, Aligned<float>> smem;  // 128-byte aligned, as dynamic shared memory
  std::vector<float> lanes;  // one slot per thread for shuffles
};
inline thread_local Block* block = nullptr;

}  // namespace simt_host

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 gridDim, blockDim;

inline void __syncthreads() { simt_host::block->all.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { simt_host::block->warps[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int offset) {
  simt_host::Block* b = simt_host::block;
  const unsigned t = threadIdx.x;
  b->lanes[t] = v;
  __syncwarp();
  const float r = b->lanes[(t & ~31u) | ((t & 31u) ^ unsigned(offset))];
  __syncwarp();  // the slot is rewritten by the next shuffle
  return r;
}
using std::min;

namespace dipaco::cuda {

inline float* dynamic_smem() { return simt_host::block->smem.data(); }

// bf16 as the GPU rounds it (to nearest, ties to even); finite inputs only.
struct bf16 {
  uint16_t bits;
  operator float() const {
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};
inline bf16 to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return {uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

// WMMA's contract, checked: 32-byte aligned tiles, pitches of whole 16-byte rows.
inline void check_tile(const void* p, int ld, int esize) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ld * esize) % 16 != 0)
    throw std::logic_error("mma_tile: a tile at " + std::to_string(reinterpret_cast<uintptr_t>(p) % 32) +
                           " bytes past 32-byte alignment or a pitch of " + std::to_string(ld) + " elements");
}

// simt.cuh's mma_tile: lane 0 multiplies in fp32 what the tensor cores would
// (bf16 operands, fp32 sums) while the warp waits.
template <bool kTransB>
inline void mma_tile(float* c, int ldc, const bf16* a, int lda, const bf16* b, int ldb, int K, bool accumulate) {
  __syncwarp();
  if (threadIdx.x % 32 == 0) {
    check_tile(c, ldc, 4), check_tile(a, lda, 2), check_tile(b, ldb, 2);
    for (int k = 0; k < K; k += 16) check_tile(a + k, lda, 2), check_tile(kTransB ? b + k : b + size_t(k) * ldb, ldb, 2);
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 16; ++j) {
        float s = accumulate ? c[i * ldc + j] : 0.0f;
        for (int k = 0; k < K; ++k) s += float(a[i * lda + k]) * float(kTransB ? b[j * ldb + k] : b[size_t(k) * ldb + j]);
        c[i * ldc + j] = s;
      }
  }
  __syncwarp();
}

}  // namespace dipaco::cuda

namespace simt_host {

// kernel<<<grid, threads, smem_bytes>>>(args...), block by block: one team of
// host threads walks the grid, meeting at a barrier after each block.
template <typename Kernel, typename... Args>
void launch(dim3 grid, int threads, size_t smem_bytes, Kernel kernel, Args... args) {
  gridDim = grid, blockDim = {unsigned(threads), 1, 1};
  Block b(threads, smem_bytes);
  std::barrier<> done(threads);
  std::vector<std::thread> team;
  team.reserve(threads);
  for (int t = 0; t < threads; ++t)
    team.emplace_back([&, t] {
      block = &b, threadIdx = {unsigned(t), 0, 0};
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          blockIdx = {x, y, 0};
          kernel(args...);
          done.arrive_and_wait();
        }
    });
  for (auto& th : team) th.join();
}

}  // namespace simt_host
