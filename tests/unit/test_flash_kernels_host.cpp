// The GPU's flash attention kernels (src/model/kernels/cuda/flash_attention_kernels.cuh
// on the CUDA cores, flash_attention_tc_kernels.cuh on the tensor cores) run
// on the host under the block emulator (simt_host.hpp), against the CPU's
// fused attention: forward output, row stats and every gradient, at ragged
// tiles, every padded head size and several sequences and heads. The launch
// shapes are those of flash_attention.cu. On a GPU, test_cuda_kernels.cpp runs
// the same kernels compiled by nvcc.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "dipaco/model/kernels.hpp"
#include "simt_host.hpp"
// after simt_host.hpp:
#include "../../src/model/kernels/cuda/flash_attention_kernels.cuh"
#include "../../src/model/kernels/cuda/flash_attention_tc_kernels.cuh"

using namespace dipaco;
using namespace dipaco::cuda::flash;

namespace {

std::vector<float> randn(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) num += std::pow(double(got[i]) - want[i], 2), den += double(want[i]) * want[i];
  return std::sqrt(num / den);
}

struct Shape {
  int B, T, H, D;
};

// flash_attention.cu's launches: fp32 kernels on 8 warps, or the tensor-core
// kernels on 4.
template <int DP>
void run(const Shape& s, float scale, bool tc, const std::vector<float>& qkv, const std::vector<float>& dout,
         std::vector<float>& out, std::vector<float>& stats, std::vector<float>& dqkv) {
  const dim3 grid{unsigned(s.B * s.H), unsigned((s.T + kTile - 1) / kTile), 1};
  if (tc)
    simt_host::launch(grid, kTcThreads, tc_forward_smem<DP>(), flash_forward_tc_kernel<DP>, out.data(), stats.data(),
                      qkv.data(), s.T, s.H, s.D, scale);
  else
    simt_host::launch(grid, kThreads, forward_smem<DP>(), flash_forward_kernel<DP>, out.data(), stats.data(),
                      qkv.data(), s.T, s.H, s.D, scale);
  std::vector<float> rowdot(size_t(s.B) * s.H * s.T, 7.0f);
  const int rows = s.B * s.H * s.T;
  simt_host::launch(dim3{unsigned((rows + kWarps - 1) / kWarps), 1, 1}, kThreads, 0, rowdot_kernel, rowdot.data(),
                    dout.data(), out.data(), s.B, s.T, s.H, s.D);
  if (tc) {
    simt_host::launch(grid, kTcThreads, tc_backward_kv_smem<DP>(), flash_backward_kv_tc_kernel<DP>, dqkv.data(),
                      dout.data(), qkv.data(), stats.data(), rowdot.data(), s.T, s.H, s.D, scale);
    simt_host::launch(grid, kTcThreads, tc_backward_q_smem<DP>(), flash_backward_q_tc_kernel<DP>, dqkv.data(),
                      dout.data(), qkv.data(), stats.data(), rowdot.data(), s.T, s.H, s.D, scale);
    return;
  }
  simt_host::launch(grid, kThreads, backward_kv_smem<DP>(), flash_backward_kv_kernel<DP>, dqkv.data(), dout.data(),
                    qkv.data(), stats.data(), rowdot.data(), s.T, s.H, s.D, scale);
  simt_host::launch(grid, kThreads, backward_q_smem<DP>(), flash_backward_q_kernel<DP>, dqkv.data(), dout.data(),
                    qkv.data(), stats.data(), rowdot.data(), s.T, s.H, s.D, scale);
}

// Both kernel families against the CPU's fp32 attention: fp32 to 1e-5 (1e-4
// for gradients); the tensor cores' bf16 operands to 1e-2, and not to 1e-5.
void check_against_cpu(bool tc) {
  auto cpu = make_cpu_kernels();
  // T: one partial tile, a whole tile, two tiles with a ragged end; D: each
  // padding (32, 64, 128), a narrow head and a whole one.
  for (const Shape s : {Shape{1, 5, 2, 32}, Shape{2, 64, 1, 16}, Shape{1, 130, 2, 24}, Shape{1, 70, 1, 64},
                        Shape{1, 67, 1, 100}, Shape{1, 3, 1, 1}}) {
    const size_t C = size_t(s.H) * s.D, rows = size_t(s.B) * s.T;
    const float scale = 1.0f / std::sqrt(float(s.D));
    const auto qkv = randn(rows * 3 * C, 1 + s.T), dout = randn(rows * C, 2 + s.D);
    std::vector<float> out(rows * C), stats(2 * size_t(s.B) * s.H * s.T), dqkv(rows * 3 * C);
    cpu->fused_attention_forward(out.data(), stats.data(), qkv.data(), s.B, s.T, s.H, s.D, scale, Precision::fp32);
    cpu->fused_attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), stats.data(), s.B, s.T, s.H, s.D,
                                  scale, Precision::fp32);
    // 9s everywhere: every element must be written.
    std::vector<float> g_out(out.size(), 9.0f), g_stats(stats.size(), 9.0f), g_dqkv(dqkv.size(), 9.0f);
    if (s.D <= 32)
      run<32>(s, scale, tc, qkv, dout, g_out, g_stats, g_dqkv);
    else if (s.D <= 64)
      run<64>(s, scale, tc, qkv, dout, g_out, g_stats, g_dqkv);
    else
      run<128>(s, scale, tc, qkv, dout, g_out, g_stats, g_dqkv);
    const std::string at = std::string(tc ? "tensor cores " : "fp32 ") + "B " + std::to_string(s.B) + " T " +
                           std::to_string(s.T) + " H " + std::to_string(s.H) + " D " + std::to_string(s.D);
    const double tol = tc ? 1e-2 : 1e-5, grad_tol = tc ? 1e-2 : 1e-4;
    EXPECT_LT(rel_err(g_out, out), tol) << at;
    EXPECT_LT(rel_err(g_stats, stats), tol) << at;
    if (tc && s.D > 1) EXPECT_GT(rel_err(g_out, out), 1e-5) << at << ": bf16 operands leave a trace";
    // Each third of dqkv (dQ from one kernel, dK and dV from the other) on its own.
    for (int part = 0; part < 3; ++part) {
      std::vector<float> got, want;
      for (size_t r = 0; r < rows; ++r)
        for (size_t c = part * C; c < (part + 1) * C; ++c)
          got.push_back(g_dqkv[r * 3 * C + c]), want.push_back(dqkv[r * 3 * C + c]);
      EXPECT_LT(rel_err(got, want), grad_tol) << at << " part " << "QKV"[part];
    }
  }
}

TEST(FlashKernelsOnHost, Fp32MatchesTheCpu) { check_against_cpu(false); }

TEST(FlashKernelsOnHost, TensorCoresMatchTheCpuToBf16) { check_against_cpu(true); }

}  // namespace
