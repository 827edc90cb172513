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
#include <memory>
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

struct Block {
  Block(int threads, size_t smem_bytes) : all(threads), smem((smem_bytes + 3) / 4), lanes(threads) {
    for (int w = 0; w < threads / 32; ++w) warps.push_back(std::make_unique<std::barrier<>>(32));
  }
  std::barrier<> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<float> smem;   // operator new aligns to 16 bytes: float4 reads stay aligned
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
