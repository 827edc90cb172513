// The CUDA backend against the CPU backend: every Kernels primitive on fresh
// random inputs, then the whole model's loss and gradient. Skipped where no
// CUDA device is visible; compiled only into CUDA builds.
#ifdef DIPACO_HAVE_CUDA
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "dipaco/model/kernels.hpp"
#include "dipaco/model/layers.hpp"
#include "dipaco/model/model.hpp"

using namespace dipaco;

namespace {

constexpr double kTol = 1e-4, kBf16Tol = 1e-2;

std::mt19937 rng(20240601);

std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
std::vector<int32_t> rand_tokens(size_t n, int V) {
  // Skewed like text: a third of the tokens are one value, so some rows of
  // the embedding gradient collect long runs.
  std::uniform_int_distribution<int> d(0, V - 1), coin(0, 2);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = coin(rng) == 0 ? 32 % V : d(rng);
  return t;
}

// ||got - want|| / ||want||
double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    double d = double(got[i]) - want[i];
    num += d * d, den += double(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

class CudaKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    try {
      gpu = make_kernels(Device::cuda);
    } catch (const std::exception& e) {
      GTEST_SKIP() << "no CUDA device: " << e.what();
    }
  }

  template <typename T>
  DeviceBuffer<T> up(const std::vector<T>& h) {
    DeviceBuffer<T> d(*gpu, h.size());
    gpu->to_device(d.get(), h.data(), h.size() * sizeof(T));
    return d;
  }
  template <typename T>
  std::vector<T> down(const DeviceBuffer<T>& d) {
    std::vector<T> h(d.size());
    gpu->to_host(h.data(), d.get(), h.size() * sizeof(T));
    return h;
  }

  // Every transpose combination, batched and not, with and without bias and accumulation.
  void gemm_cases(Precision p, double tol) {
    struct Case {
      int batch, M, N, K;
      bool ta, tb, accumulate, bias;
    };
    const Case cases[] = {
        {1, 37, 53, 29, false, false, false, false}, {1, 37, 53, 29, true, false, false, true},
        {1, 64, 48, 96, false, true, true, false},   {1, 33, 65, 17, true, true, true, true},
        {1, 256, 768, 192, false, false, true, true}, {5, 17, 24, 40, false, true, false, false},
        {4, 31, 9, 31, true, false, true, false},    {3, 12, 20, 7, false, false, false, true},
    };
    for (const auto& c : cases) {
      GemmShape s;
      s.batch = c.batch, s.M = c.M, s.N = c.N, s.K = c.K, s.trans_a = c.ta, s.trans_b = c.tb;
      s.accumulate = c.accumulate, s.precision = p;
      // Batched operands with loose strides, so the strides are really used.
      s.stride_a = c.batch > 1 ? long(c.M) * c.K + 5 : 0;
      s.stride_b = c.batch > 1 ? long(c.K) * c.N + 3 : 0;
      s.stride_c = c.batch > 1 ? long(c.M) * c.N + 7 : 0;
      auto size = [&](long stride, int r, int cc) { return size_t(c.batch - 1) * stride + size_t(r) * cc; };
      auto A = randn(size(s.stride_a, c.M, c.K)), B = randn(size(s.stride_b, c.K, c.N));
      auto C = randn(size(s.stride_c, c.M, c.N)), bias = randn(c.N);
      auto dA = up(A), dB = up(B), dC = up(C), dbias = up(bias);
      cpu->gemm(s, A.data(), B.data(), C.data(), c.bias ? bias.data() : nullptr);
      gpu->gemm(s, dA.get(), dB.get(), dC.get(), c.bias ? dbias.get() : nullptr);
      EXPECT_LT(rel_err(down(dC), C), tol) << "batch " << c.batch << " M " << c.M << " N " << c.N << " K " << c.K
                                           << " ta " << c.ta << " tb " << c.tb << " acc " << c.accumulate
                                           << " bias " << c.bias;
    }
  }

  std::unique_ptr<Kernels> cpu = make_cpu_kernels(), gpu;
};

TEST_F(CudaKernelsTest, GemmFp32) { gemm_cases(Precision::fp32, kTol); }

TEST_F(CudaKernelsTest, GemmBf16) { gemm_cases(Precision::bf16, kBf16Tol); }

// TF32 keeps 10 mantissa bits: near fp32 (well within bf16's tolerance), yet
// not the fp32 product bit for bit.
TEST_F(CudaKernelsTest, GemmTf32) {
  gemm_cases(Precision::tf32, 5e-3);
  GemmShape s;
  s.M = 64, s.N = 80, s.K = 96;
  auto A = randn(64 * 96), B = randn(96 * 80);
  auto dA = up(A), dB = up(B);
  DeviceBuffer<float> c32(*gpu, 64 * 80), c19(*gpu, 64 * 80);
  gpu->gemm(s, dA.get(), dB.get(), c32.get(), nullptr);
  s.precision = Precision::tf32;
  gpu->gemm(s, dA.get(), dB.get(), c19.get(), nullptr);
  EXPECT_NE(down(c32), down(c19));
}

TEST_F(CudaKernelsTest, GemmBf16IsReallyBf16) {
  GemmShape s;
  s.M = 64, s.N = 80, s.K = 96, s.precision = Precision::bf16;
  auto A = randn(64 * 96), B = randn(96 * 80);
  std::vector<float> C(64 * 80);
  auto dA = up(A), dB = up(B), dC = up(C);
  gpu->gemm(s, dA.get(), dB.get(), dC.get(), nullptr);
  s.precision = Precision::fp32;
  cpu->gemm(s, A.data(), B.data(), C.data(), nullptr);
  double e = rel_err(down(dC), C);
  EXPECT_LT(e, kBf16Tol);
  EXPECT_GT(e, 1e-5);
}

TEST_F(CudaKernelsTest, Encoder) {
  const int V = 256, T = 16, B = 5, N = B * T, C = 300;  // C > one block of channels
  auto wte = randn(V * C), wpe = randn(T * C), dout = randn(N * C);
  auto tok = rand_tokens(N, V);
  std::vector<float> out(N * C);
  auto dwte = randn(V * C), dwpe = randn(T * C);  // the gradients accumulate onto these
  auto gwte = up(wte), gwpe = up(wpe), gout = up(out), gdout = up(dout), gdwte = up(dwte), gdwpe = up(dwpe);
  auto gtok = up(tok);
  cpu->encoder_forward(out.data(), tok.data(), wte.data(), wpe.data(), N, T, C);
  gpu->encoder_forward(gout.get(), gtok.get(), gwte.get(), gwpe.get(), N, T, C);
  EXPECT_LT(rel_err(down(gout), out), kTol);
  cpu->encoder_backward(dwte.data(), dwpe.data(), dout.data(), tok.data(), N, T, C);
  gpu->encoder_backward(gdwte.get(), gdwpe.get(), gdout.get(), gtok.get(), N, T, C);
  EXPECT_LT(rel_err(down(gdwte), dwte), kTol);
  EXPECT_LT(rel_err(down(gdwpe), dwpe), kTol);
}

TEST_F(CudaKernelsTest, EncoderBackwardLargerVocabulary) {
  // More token values than the kernel's blocks: one block serves several rows.
  const int V = 700, T = 8, B = 40, N = B * T, C = 64;
  auto dout = randn(N * C);
  auto tok = rand_tokens(N, V);
  auto dwte = randn(V * C), dwpe = randn(T * C);
  auto gdout = up(dout), gdwte = up(dwte), gdwpe = up(dwpe);
  auto gtok = up(tok);
  cpu->encoder_backward(dwte.data(), dwpe.data(), dout.data(), tok.data(), N, T, C);
  gpu->encoder_backward(gdwte.get(), gdwpe.get(), gdout.get(), gtok.get(), N, T, C);
  EXPECT_LT(rel_err(down(gdwte), dwte), kTol);
  EXPECT_LT(rel_err(down(gdwpe), dwpe), kTol);
}

TEST_F(CudaKernelsTest, LayerNorm) {
  const int N = 300, C = 200;
  auto x = randn(N * C, 2.0f), w = randn(C), b = randn(C), dout = randn(N * C);
  for (size_t i = 0; i < x.size(); ++i) x[i] += float(i % C) * 0.01f;  // a mean per row that is not zero
  std::vector<float> out(N * C), mean(N), rstd(N);
  auto gx = up(x), gw = up(w), gb = up(b), gout = up(out), gmean = up(mean), grstd = up(rstd), gdout = up(dout);
  cpu->layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  gpu->layernorm_forward(gout.get(), gmean.get(), grstd.get(), gx.get(), gw.get(), gb.get(), N, C);
  EXPECT_LT(rel_err(down(gout), out), kTol);
  EXPECT_LT(rel_err(down(gmean), mean), kTol);
  EXPECT_LT(rel_err(down(grstd), rstd), kTol);

  auto dx = randn(N * C), dw = randn(C), db = randn(C);  // all three accumulate
  auto gdx = up(dx), gdw = up(dw), gdb = up(db);
  cpu->layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N,
                          C);
  gpu->layernorm_backward(gdx.get(), gdw.get(), gdb.get(), gdout.get(), gx.get(), gw.get(), gmean.get(), grstd.get(),
                          N, C);
  EXPECT_LT(rel_err(down(gdx), dx), kTol);
  EXPECT_LT(rel_err(down(gdw), dw), kTol);
  EXPECT_LT(rel_err(down(gdb), db), kTol);
}

TEST_F(CudaKernelsTest, GeluAndAdd) {
  const size_t n = 10007;
  auto x = randn(n, 3.0f), y = randn(n), dout = randn(n);
  std::vector<float> out(n), dx(n), sum(n);
  auto gx = up(x), gy = up(y), gdout = up(dout), gout = up(out), gdx = up(dx), gsum = up(sum);
  cpu->gelu_forward(out.data(), x.data(), n);
  gpu->gelu_forward(gout.get(), gx.get(), n);
  EXPECT_LT(rel_err(down(gout), out), kTol);
  cpu->gelu_backward(dx.data(), x.data(), dout.data(), n);
  gpu->gelu_backward(gdx.get(), gx.get(), gdout.get(), n);
  EXPECT_LT(rel_err(down(gdx), dx), kTol);
  cpu->add(sum.data(), x.data(), y.data(), n);
  gpu->add(gsum.get(), gx.get(), gy.get(), n);
  EXPECT_LT(rel_err(down(gsum), sum), kTol);
}

TEST_F(CudaKernelsTest, BiasBackward) {
  for (auto [M, N] : {std::pair{333, 77}, std::pair{8, 1000}, std::pair{9000, 40}}) {
    auto dout = randn(size_t(M) * N), db = randn(N);
    auto gdout = up(dout), gdb = up(db);
    cpu->bias_backward(db.data(), dout.data(), M, N);
    gpu->bias_backward(gdb.get(), gdout.get(), M, N);
    EXPECT_LT(rel_err(down(gdb), db), kTol) << M << "x" << N;
  }
}

// Two batch levels and row pitches, as attention reads heads out of the qkv rows.
TEST_F(CudaKernelsTest, GemmPitchedTwoLevelBatches) {
  for (Precision p : {Precision::fp32, Precision::bf16})
    for (int t = 0; t < 4; ++t) {
      GemmShape s;
      s.batch2 = 3, s.batch = 4, s.M = 33, s.N = 16, s.K = 40, s.trans_a = t & 1, s.trans_b = t & 2;
      s.accumulate = t == 3, s.precision = p;
      const int ar = s.trans_a ? s.K : s.M, ac = s.trans_a ? s.M : s.K, br = s.trans_b ? s.N : s.K,
                bc = s.trans_b ? s.K : s.N;
      s.ld_a = 4 * ac, s.ld_b = 4 * bc, s.ld_c = 4 * s.N;
      s.stride_a = ac, s.stride_b = bc, s.stride_c = s.N;
      s.stride2_a = ar * s.ld_a, s.stride2_b = br * s.ld_b, s.stride2_c = s.M * s.ld_c;
      auto A = randn(s.extent_a()), B = randn(s.extent_b()), C = randn(size_t(s.batch2) * s.stride2_c);
      auto dA = up(A), dB = up(B), dC = up(C);
      cpu->gemm(s, A.data(), B.data(), C.data(), nullptr);
      gpu->gemm(s, dA.get(), dB.get(), dC.get(), nullptr);
      EXPECT_LT(rel_err(down(dC), C), p == Precision::bf16 ? kBf16Tol : kTol) << "trans " << t;
    }
}

// The attention core on the GPU, fused (0), unblocked and in causal blocks, against the CPU's.
TEST_F(CudaKernelsTest, CausalAttention) {
  const int B = 2, T = 45, H = 3, D = 16, C = H * D;
  auto qkv = randn(size_t(B) * T * 3 * C), dout = randn(size_t(B) * T * C);
  std::vector<float> att(size_t(B) * H * T * T), out(size_t(B) * T * C), dqkv(3 * out.size()), scratch(2 * att.size());
  attention_forward(*cpu, out.data(), att.data(), qkv.data(), B, T, H, D, Precision::fp32);
  attention_backward(*cpu, dqkv.data(), dout.data(), qkv.data(), out.data(), att.data(), scratch.data(), B, T, H, D, Precision::fp32);
  for (int block : {0, T, 16}) {
    auto gqkv = up(qkv), gdout = up(dout), gatt = up(att), gout = up(out), gdqkv = up(dqkv), gscratch = up(scratch);
    attention_forward(*gpu, gout.get(), gatt.get(), gqkv.get(), B, T, H, D, Precision::fp32, block);
    attention_backward(*gpu, gdqkv.get(), gdout.get(), gqkv.get(), gout.get(), gatt.get(), gscratch.get(), B, T, H, D,
                       Precision::fp32, block);
    EXPECT_LT(rel_err(down(gout), out), kTol) << "block " << block;
    EXPECT_LT(rel_err(down(gdqkv), dqkv), kTol) << "block " << block;
  }
}

// Flash attention against the CPU's fused attention at the sizes it meets:
// several tiles with a ragged end, every padded head size (32, 64, 128) and
// heads that are not whole warps, sequences of the benchmark's length; the
// row stats too (the backward recomputes the probabilities from them). fp32 on
// the CUDA cores, bf16 on the tensor cores (bf16 operands: bf16's tolerance).
TEST_F(CudaKernelsTest, FlashAttentionMatchesCpu) {
  struct Shape {
    int B, T, H, D;
  };
  for (Precision p : {Precision::fp32, Precision::bf16})
    for (const Shape s : {Shape{2, 45, 3, 16}, Shape{1, 200, 2, 64}, Shape{2, 129, 2, 128}, Shape{1, 70, 3, 100},
                          Shape{4, 128, 4, 32}, Shape{1, 1024, 2, 64}, Shape{2, 2, 1, 1}}) {
      ASSERT_TRUE(gpu->has_fused_attention(s.D));
      const size_t C = size_t(s.H) * s.D, rows = size_t(s.B) * s.T;
      const float scale = 1.0f / std::sqrt(float(s.D));
      auto qkv = randn(rows * 3 * C), dout = randn(rows * C);
      std::vector<float> out(rows * C), stats(2 * size_t(s.B) * s.H * s.T), dqkv(rows * 3 * C);
      cpu->fused_attention_forward(out.data(), stats.data(), qkv.data(), s.B, s.T, s.H, s.D, scale, Precision::fp32);
      cpu->fused_attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), stats.data(), s.B, s.T, s.H, s.D,
                                    scale, Precision::fp32);
      auto gqkv = up(qkv), gdout = up(dout);
      auto gout = up(std::vector<float>(out.size(), 9.0f)), gstats = up(std::vector<float>(stats.size(), 9.0f));
      auto gdqkv = up(std::vector<float>(dqkv.size(), 9.0f));
      gpu->fused_attention_forward(gout.get(), gstats.get(), gqkv.get(), s.B, s.T, s.H, s.D, scale, p);
      gpu->fused_attention_backward(gdqkv.get(), gdout.get(), gqkv.get(), gout.get(), gstats.get(), s.B, s.T, s.H, s.D,
                                    scale, p);
      const std::string at = std::string(p == Precision::bf16 ? "bf16 " : "fp32 ") + std::to_string(s.B) + "x" +
                             std::to_string(s.T) + "x" + std::to_string(s.H) + "x" + std::to_string(s.D);
      const double tol = p == Precision::bf16 ? 3 * kBf16Tol : kTol;
      EXPECT_LT(rel_err(down(gout), out), tol) << at;
      EXPECT_LT(rel_err(down(gstats), stats), tol) << at;
      EXPECT_LT(rel_err(down(gdqkv), dqkv), tol) << at;
    }
  EXPECT_FALSE(gpu->has_fused_attention(kCudaFusedAttentionMaxHead + 1));  // composed beyond the widest head
}

TEST_F(CudaKernelsTest, CausalSoftmax) {
  const int BH = 6, T = 45;  // rows both shorter and longer than a warp
  const float scale = 0.37f;
  auto scores = randn(size_t(BH) * T * T, 3.0f), datt = randn(size_t(BH) * T * T);
  std::vector<float> att(scores.size()), ds(scores.size());
  auto gscores = up(scores), gatt = up(att), gdatt = up(datt), gds = up(ds);
  cpu->causal_softmax_forward(att.data(), scores.data(), BH, T, scale);
  gpu->causal_softmax_forward(gatt.get(), gscores.get(), BH, T, scale);
  EXPECT_LT(rel_err(down(gatt), att), kTol);
  gpu->causal_softmax_forward(gscores.get(), gscores.get(), BH, T, scale);  // in place, as the model calls it
  EXPECT_LT(rel_err(down(gscores), att), kTol);
  cpu->causal_softmax_backward(ds.data(), datt.data(), att.data(), BH, T, scale);
  gpu->causal_softmax_backward(gds.get(), gdatt.get(), gatt.get(), BH, T, scale);
  EXPECT_LT(rel_err(down(gds), ds), kTol);
}

TEST_F(CudaKernelsTest, SoftmaxCrossEntropy) {
  const int N = 50, V = 256;
  auto logits = randn(size_t(N) * V, 4.0f);
  auto tgt = rand_tokens(N, V);
  std::vector<float> loss(N);
  auto glogits = up(logits), gloss = up(loss);
  auto gtgt = up(tgt);
  cpu->softmax_crossentropy_forward(logits.data(), loss.data(), tgt.data(), N, V);
  gpu->softmax_crossentropy_forward(glogits.get(), gloss.get(), gtgt.get(), N, V);
  EXPECT_LT(rel_err(down(glogits), logits), kTol);
  EXPECT_LT(rel_err(down(gloss), loss), kTol);
  cpu->softmax_crossentropy_backward(logits.data(), tgt.data(), N, V, 1.0f / N);
  gpu->softmax_crossentropy_backward(glogits.get(), gtgt.get(), N, V, 1.0f / N);
  EXPECT_LT(rel_err(down(glogits), logits), kTol);
}

TEST_F(CudaKernelsTest, ReductionsAndScale) {
  for (size_t n : {size_t(1), size_t(1000), size_t(1000003)}) {
    auto x = randn(n);
    for (auto& v : x) v += 0.25f;  // a sum well away from zero
    auto gx = up(x);
    EXPECT_NEAR(gpu->sum(gx.get(), n), cpu->sum(x.data(), n), 1e-9 * n + 1e-9);
    double sq = cpu->sum_squares(x.data(), n);
    EXPECT_NEAR(gpu->sum_squares(gx.get(), n), sq, 1e-10 * sq);
    cpu->scale(x.data(), 0.3f, n);
    gpu->scale(gx.get(), 0.3f, n);
    EXPECT_LT(rel_err(down(gx), x), kTol);
  }
}

TEST_F(CudaKernelsTest, OptimizerUpdates) {
  const size_t n = 4099;
  auto p = randn(n), g = randn(n), m = randn(n, 0.1f), v = randn(n, 0.1f);
  for (auto& x : v) x = std::abs(x);
  auto gp = up(p), gg = up(g), gm = up(m), gv = up(v);
  for (long t : {1L, 2L, 50L}) {
    cpu->adamw(p.data(), g.data(), m.data(), v.data(), n, 0.01f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
    gpu->adamw(gp.get(), gg.get(), gm.get(), gv.get(), n, 0.01f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
  }
  EXPECT_LT(rel_err(down(gp), p), kTol);
  EXPECT_LT(rel_err(down(gm), m), kTol);
  EXPECT_LT(rel_err(down(gv), v), kTol);

  // Runs of one arena in one launch, against the CPU's adamw per run; the gap
  // between the runs is left alone.
  const std::vector<AdamwRun> runs{{0, 1000, 0.1f}, {1000, 7, 0.0f}, {1007, 2000, 0.1f}, {3100, 999, 0.0f}};
  for (long t : {1L, 2L}) {
    for (const AdamwRun& r : runs)
      cpu->adamw(p.data() + r.offset, g.data() + r.offset, m.data() + r.offset, v.data() + r.offset, r.size, 0.01f,
                 0.9f, 0.95f, 1e-8f, r.weight_decay, t);
    gpu->adamw_runs(gp.get(), gg.get(), gm.get(), gv.get(), runs, 0.01f, 0.9f, 0.95f, 1e-8f, t);
  }
  EXPECT_LT(rel_err(down(gp), p), kTol);
  EXPECT_LT(rel_err(down(gv), v), kTol);

  auto out = randn(n), anchor = randn(n), x = randn(n), mom = randn(n), delta = randn(n);
  auto gout = up(out), ganchor = up(anchor), gx = up(x), gmom = up(mom), gdelta = up(delta);
  cpu->weighted_difference(out.data(), anchor.data(), x.data(), 0.3f, n);
  gpu->weighted_difference(gout.get(), ganchor.get(), gx.get(), 0.3f, n);
  EXPECT_LT(rel_err(down(gout), out), kTol);
  cpu->outer_nesterov(anchor.data(), mom.data(), delta.data(), n, 0.7f, 0.9f);
  gpu->outer_nesterov(ganchor.get(), gmom.get(), gdelta.get(), n, 0.7f, 0.9f);
  EXPECT_LT(rel_err(down(ganchor), anchor), kTol);
  EXPECT_LT(rel_err(down(gmom), mom), kTol);
}

TEST_F(CudaKernelsTest, MemoryOperations) {
  const size_t n = 12345;
  DeviceBuffer<float> a(*gpu, n), b(*gpu, n);
  EXPECT_EQ(down(a), std::vector<float>(n, 0.0f));  // alloc returns zeroed memory
  auto x = randn(n);
  gpu->to_device(a.get(), x.data(), n * sizeof(float));
  gpu->copy(b.get(), a.get(), n * sizeof(float));
  EXPECT_EQ(down(b), x);
  gpu->zero(b.get() + 5, 10 * sizeof(float));
  auto y = down(b);
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(y[i], i >= 5 && i < 15 ? 0.0f : x[i]) << i;
  gpu->synchronize();
}

// The whole model, fp32: loss, per-token losses and the gradient of every
// parameter against the CPU backend.
class CudaModelTest : public CudaKernelsTest {
 protected:
  struct Result {
    double loss;
    std::vector<float> token_losses, grads;
  };
  ModelShape shape() const {
    ModelShape s;
    s.V = 256, s.C = 64, s.L = 2, s.H = 4, s.T = 32, s.layers_per_level = {1, 1};
    return s;
  }
  Result run(Kernels& k, const std::vector<float>& params, const std::vector<int32_t>& tok,
             const std::vector<int32_t>& tgt, Precision p) {
    const int B = 4, N = B * shape().T;
    Model model(k, shape(), B, p);
    DeviceBuffer<float> dp(k, params.size()), dg(k, params.size());
    DeviceBuffer<int32_t> dtok(k, tok.size()), dtgt(k, tgt.size());
    k.to_device(dp.get(), params.data(), params.size() * sizeof(float));
    k.to_device(dtok.get(), tok.data(), tok.size() * sizeof(int32_t));
    k.to_device(dtgt.get(), tgt.data(), tgt.size() * sizeof(int32_t));
    Result r;
    r.loss = model.forward(dp.get(), dtok.get(), dtgt.get());
    r.token_losses.resize(N);
    k.to_host(r.token_losses.data(), model.token_losses(), N * sizeof(float));
    model.backward(dp.get(), dg.get(), dtok.get(), dtgt.get(), 1.0f / N);
    r.grads.resize(params.size());
    k.to_host(r.grads.data(), dg.get(), params.size() * sizeof(float));
    return r;
  }
  std::vector<float> params() {
    auto p = init_params(shape(), make_layout(shape()), 11);
    std::normal_distribution<float> d(0.0f, 0.1f);  // larger than the init, so every term matters
    for (auto& x : p) x += d(rng);
    return p;
  }
};

TEST_F(CudaModelTest, LossAndGradientsMatchCpu) {
  const int N = 4 * shape().T;
  auto p = params();
  auto tok = rand_tokens(N, 256), tgt = rand_tokens(N, 256);
  Result c = run(*cpu, p, tok, tgt, Precision::fp32), g = run(*gpu, p, tok, tgt, Precision::fp32);
  EXPECT_NEAR(g.loss, c.loss, 1e-5 * c.loss);
  EXPECT_LT(rel_err(g.token_losses, c.token_losses), kTol);
  EXPECT_LT(rel_err(g.grads, c.grads), kTol);
  // Per parameter group too, so a small group cannot hide in the total.
  const ParamLayout layout = make_layout(shape());
  for (const auto& group : layout.groups)
    for (const auto& v : group.views) {
      size_t off = group.offset + v.offset;
      std::vector<float> gg(g.grads.begin() + off, g.grads.begin() + off + v.size());
      std::vector<float> cg(c.grads.begin() + off, c.grads.begin() + off + v.size());
      EXPECT_LT(rel_err(gg, cg), 1e-3) << v.name;
    }
}

TEST_F(CudaModelTest, Bf16TracksCpuBf16) {
  const int N = 4 * shape().T;
  auto p = params();
  auto tok = rand_tokens(N, 256), tgt = rand_tokens(N, 256);
  Result c = run(*cpu, p, tok, tgt, Precision::bf16), g = run(*gpu, p, tok, tgt, Precision::bf16);
  EXPECT_NEAR(g.loss, c.loss, kBf16Tol * c.loss);
  EXPECT_LT(rel_err(g.grads, c.grads), 5e-2);
}

TEST_F(CudaModelTest, BitwiseReproducible) {
  const int N = 4 * shape().T;
  auto p = params();
  auto tok = rand_tokens(N, 256), tgt = rand_tokens(N, 256);
  for (Precision pr : {Precision::fp32, Precision::bf16}) {  // the flash kernels of both families sum in a fixed order
    Result a = run(*gpu, p, tok, tgt, pr), b = run(*gpu, p, tok, tgt, pr);
    EXPECT_EQ(a.loss, b.loss);
    EXPECT_EQ(0, std::memcmp(a.grads.data(), b.grads.data(), a.grads.size() * sizeof(float)));
  }
}

// Where there is no GPU, asking for one fails with a message that says so.
TEST(CudaDevice, UnavailableIsAClearError) {
  try {
    auto k = make_kernels(Device::cuda);
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("run.device = cuda but no CUDA device is visible"), std::string::npos)
        << e.what();
    return;
  }
  GTEST_SKIP() << "a CUDA device is visible";
}

}  // namespace
#endif  // DIPACO_HAVE_CUDA
