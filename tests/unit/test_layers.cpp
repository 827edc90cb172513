// Every layer's forward against the double-precision reference, and every
// backward against central finite differences of that reference.
#include <gtest/gtest.h>

#include <omp.h>

#include <array>
#include <random>

#include "dipaco/model/kernels.hpp"
#include "dipaco/model/layers.hpp"
#include "reference.hpp"

using namespace dipaco;
using ref::Vec;

namespace {

std::mt19937 rng(42);

std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
Vec to_d(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }
std::vector<float> to_f(const Vec& v) { return std::vector<float>(v.begin(), v.end()); }

double rel_err(const std::vector<float>& a, const Vec& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return std::sqrt(num / std::max(den, 1e-30));
}
double dot(const Vec& a, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * r[i];
  return s;
}
// Finite-difference gradient of f() with respect to every element of x.
template <typename F>
Vec fd_grad(F&& f, Vec& x) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) g[i] = ref::fd(f, x, i);
  return g;
}

constexpr double kFwdTol = 2e-6, kBwdTol = 1e-4;

struct LayerTest : ::testing::Test {
  std::unique_ptr<Kernels> k = make_cpu_kernels();
};

TEST_F(LayerTest, Linear) {
  const int N = 6, I = 5, O = 7;
  auto x = randn(N * I), W = randn(I * O), b = randn(O), r = randn(N * O);
  std::vector<float> out(N * O);
  linear_forward(*k, out.data(), x.data(), W.data(), b.data(), N, I, O, Precision::fp32);
  Vec xd = to_d(x), Wd = to_d(W), bd = to_d(b);
  EXPECT_LT(rel_err(out, ref::linear(xd, Wd, &bd, N, I, O)), kFwdTol);

  std::vector<float> dx(N * I), dW(I * O), db(O);
  linear_backward(*k, dx.data(), dW.data(), db.data(), r.data(), x.data(), W.data(), N, I, O, Precision::fp32);
  auto f = [&] { return dot(ref::linear(xd, Wd, &bd, N, I, O), r); };
  EXPECT_LT(rel_err(dx, fd_grad(f, xd)), kBwdTol);
  EXPECT_LT(rel_err(dW, fd_grad(f, Wd)), kBwdTol);
  EXPECT_LT(rel_err(db, fd_grad(f, bd)), kBwdTol);

  // The weight gradient accumulates: a second backward doubles it.
  linear_backward(*k, nullptr, dW.data(), db.data(), r.data(), x.data(), W.data(), N, I, O, Precision::fp32);
  Vec twice = fd_grad(f, Wd);
  for (auto& v : twice) v *= 2;
  EXPECT_LT(rel_err(dW, twice), kBwdTol);
}

TEST_F(LayerTest, LinearBf16TracksFp32) {
  const int N = 64, I = 96, O = 80;
  auto x = randn(N * I), W = randn(I * O), b = randn(O);
  std::vector<float> out(N * O);
  linear_forward(*k, out.data(), x.data(), W.data(), b.data(), N, I, O, Precision::bf16);
  Vec xd = to_d(x), Wd = to_d(W), bd = to_d(b);
  double e = rel_err(out, ref::linear(xd, Wd, &bd, N, I, O));
  EXPECT_LT(e, 1e-2);
  EXPECT_GT(e, 1e-5);  // it really ran in bf16
}

TEST_F(LayerTest, LayerNorm) {
  const int N = 4, C = 16;
  auto x = randn(N * C, 2.0f), w = randn(C), b = randn(C), r = randn(N * C);
  std::vector<float> out(N * C), mean(N), rstd(N);
  k->layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  Vec xd = to_d(x), wd = to_d(w), bd = to_d(b);
  EXPECT_LT(rel_err(out, ref::layernorm(xd, wd, bd, N, C)), kFwdTol);

  std::vector<float> dx(N * C, 0.5f), dw(C), db(C);  // dx accumulates onto 0.5
  k->layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
  auto f = [&] { return dot(ref::layernorm(xd, wd, bd, N, C), r); };
  Vec gx = fd_grad(f, xd);
  for (auto& v : gx) v += 0.5;
  EXPECT_LT(rel_err(dx, gx), kBwdTol);
  EXPECT_LT(rel_err(dw, fd_grad(f, wd)), kBwdTol);
  EXPECT_LT(rel_err(db, fd_grad(f, bd)), kBwdTol);
}

TEST_F(LayerTest, Gelu) {
  const int n = 50;
  auto x = randn(n, 2.0f), r = randn(n);
  std::vector<float> out(n), dx(n);
  k->gelu_forward(out.data(), x.data(), n);
  Vec xd = to_d(x);
  EXPECT_LT(rel_err(out, ref::gelu(xd)), kFwdTol);
  k->gelu_backward(dx.data(), x.data(), r.data(), n);
  auto f = [&] { return dot(ref::gelu(xd), r); };
  EXPECT_LT(rel_err(dx, fd_grad(f, xd)), kBwdTol);
}

TEST_F(LayerTest, CausalAttention) {
  const int B = 2, T = 5, H = 2, D = 4, C = H * D;
  auto qkv = randn(B * T * 3 * C), r = randn(B * T * C);
  Vec qd = to_d(qkv);
  auto f = [&] { return dot(ref::attention(qd, B, T, H, D), r); };
  const Vec grad = fd_grad(f, qd);
  // Unblocked, the kernels' choice, and causal blocks of 1, 2 and 3 query rows
  // (3 leaves a ragged last block).
  for (int block : {T, 0, 1, 2, 3}) {
    std::vector<float> att(B * H * T * T), out(B * T * C), dqkv(B * T * 3 * C, 7.0f), scratch(2 * B * H * T * T);
    attention_forward(*k, out.data(), att.data(), qkv.data(), B, T, H, D, Precision::fp32, block);
    EXPECT_LT(rel_err(out, ref::attention(qd, B, T, H, D)), kFwdTol) << "block " << block;
    attention_backward(*k, dqkv.data(), r.data(), qkv.data(), out.data(), att.data(), scratch.data(), B, T, H, D, Precision::fp32,
                       block);
    EXPECT_LT(rel_err(dqkv, grad), kBwdTol) << "block " << block;  // overwritten, not accumulated onto the 7s
  }
}

// The kernels' fused attention (block 0 on the CPU) against the matmuls and
// softmax it replaces (one block of T rows), at sizes that leave ragged row
// tiles, head widths that are not whole vectors and a 1-wide head.
TEST_F(LayerTest, FusedAttentionMatchesComposed) {
  if (!k->has_fused_attention(1)) GTEST_SKIP() << "these kernels have no fused attention";
  for (auto [B, T, H, D] : std::vector<std::array<int, 4>>{{2, 70, 3, 20}, {1, 33, 2, 64}, {3, 17, 1, 5}, {2, 2, 2, 1}}) {
    const int C = H * D;
    auto qkv = randn(size_t(B) * T * 3 * C), r = randn(size_t(B) * T * C);
    std::vector<float> out[2], dqkv[2];
    for (int i = 0; i < 2; ++i) {
      std::vector<float> att(size_t(B) * H * T * T), scratch(2 * att.size());
      out[i].assign(size_t(B) * T * C, 9.0f), dqkv[i].assign(size_t(B) * T * 3 * C, 9.0f);
      attention_forward(*k, out[i].data(), att.data(), qkv.data(), B, T, H, D, Precision::fp32, i == 0 ? 0 : T);
      attention_backward(*k, dqkv[i].data(), r.data(), qkv.data(), out[i].data(), att.data(), scratch.data(), B, T, H, D,
                         Precision::fp32, i == 0 ? 0 : T);
    }
    EXPECT_LT(rel_err(out[0], to_d(out[1])), 1e-6) << B << " " << T << " " << H << " " << D;
    EXPECT_LT(rel_err(dqkv[0], to_d(dqkv[1])), 1e-5) << B << " " << T << " " << H << " " << D;
  }
  EXPECT_EQ(attention_saved_floats(true, 2, 3, 70), size_t(2 * 2 * 3 * 70));  // each row's max and 1/sum
  EXPECT_EQ(attention_scratch_floats(true, 2, 3, 70), 0u);
  EXPECT_EQ(attention_saved_floats(true, 2, 3, 1), size_t(2 * 3));  // T = 1 is composed
}

// A head is one thread's from start to end: bitwise the same at any thread count.
TEST_F(LayerTest, FusedAttentionSameAtAnyThreadCount) {
  if (!k->has_fused_attention(1)) GTEST_SKIP() << "these kernels have no fused attention";
  const int B = 3, T = 45, H = 2, D = 24, C = H * D;
  auto qkv = randn(size_t(B) * T * 3 * C), r = randn(size_t(B) * T * C);
  std::vector<float> out[2], dqkv[2];
  const int threads = omp_get_max_threads();
  for (int i = 0; i < 2; ++i) {
    omp_set_num_threads(i == 0 ? 1 : 3);
    std::vector<float> att(size_t(B) * H * T * T);
    out[i].resize(size_t(B) * T * C), dqkv[i].resize(size_t(B) * T * 3 * C);
    attention_forward(*k, out[i].data(), att.data(), qkv.data(), B, T, H, D, Precision::fp32);
    attention_backward(*k, dqkv[i].data(), r.data(), qkv.data(), out[i].data(), att.data(), nullptr, B, T, H, D, Precision::fp32);
  }
  omp_set_num_threads(threads);
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(dqkv[0], dqkv[1]);
}

// Blocks of the sizes the kernels choose at long T (here 32 of 70 rows, ragged
// at the end) agree with the full square; and at T = 256 the CPU does block.
TEST_F(LayerTest, CausalAttentionBlocksMatchUnblocked) {
  const int B = 2, T = 70, H = 3, D = 8, C = H * D;
  EXPECT_LT(k->causal_block_rows(256, Precision::fp32), 256);
  EXPECT_EQ(k->causal_block_rows(256, Precision::bf16), 256);  // bf16 converts per call: blocks cost more
  auto qkv = randn(B * T * 3 * C), r = randn(B * T * C);
  std::vector<float> out[2], dqkv[2];
  for (int i = 0; i < 2; ++i) {
    const int block = i == 0 ? T : 32;
    std::vector<float> att(B * H * T * T), scratch(2 * B * H * T * T);
    out[i].resize(B * T * C), dqkv[i].resize(B * T * 3 * C);
    attention_forward(*k, out[i].data(), att.data(), qkv.data(), B, T, H, D, Precision::fp32, block);
    attention_backward(*k, dqkv[i].data(), r.data(), qkv.data(), out[i].data(), att.data(), scratch.data(), B, T, H, D,
                       Precision::fp32, block);
  }
  EXPECT_LT(rel_err(out[1], to_d(out[0])), 1e-6);
  EXPECT_LT(rel_err(dqkv[1], to_d(dqkv[0])), 1e-6);
}

// Two batch levels, row pitches wider than the matrices and every transpose,
// against a naive double-precision loop (the layout attention reads heads with).
TEST_F(LayerTest, GemmPitchedTwoLevelBatches) {
  for (int t = 0; t < 4; ++t)
    for (bool acc : {false, true}) {
      GemmShape s;
      s.batch2 = 3, s.batch = 2, s.M = 7, s.N = 5, s.K = 6, s.trans_a = t & 1, s.trans_b = t & 2, s.accumulate = acc;
      const int ar = s.trans_a ? s.K : s.M, ac = s.trans_a ? s.M : s.K, br = s.trans_b ? s.N : s.K,
                bc = s.trans_b ? s.K : s.N;
      // Matrices side by side within a row (as heads in a qkv row), with gaps everywhere.
      s.stride_a = ac + 1, s.stride_b = bc + 1, s.stride_c = s.N + 1;
      s.ld_a = s.batch * s.stride_a + 3, s.ld_b = s.batch * s.stride_b + 2, s.ld_c = s.batch * s.stride_c + 4;
      s.stride2_a = ar * s.ld_a + 9, s.stride2_b = br * s.ld_b + 5, s.stride2_c = s.M * s.ld_c + 2;
      auto A = randn(s.extent_a()), B = randn(s.extent_b());
      auto C = randn(size_t(s.batch2 - 1) * s.stride2_c + size_t(s.batch - 1) * s.stride_c + (s.M - 1) * s.ld_c + s.N);
      Vec want = to_d(C);
      for (int o = 0; o < s.batch2; ++o)
        for (int b = 0; b < s.batch; ++b)
          for (int i = 0; i < s.M; ++i)
            for (int j = 0; j < s.N; ++j) {
              double sum = 0;
              for (int q = 0; q < s.K; ++q) {
                const float* a = A.data() + o * s.stride2_a + b * s.stride_a;
                const float* bb = B.data() + o * s.stride2_b + b * s.stride_b;
                sum += double(s.trans_a ? a[q * s.ld_a + i] : a[i * s.ld_a + q]) *
                       (s.trans_b ? bb[j * s.ld_b + q] : bb[q * s.ld_b + j]);
              }
              double& c = want[o * s.stride2_c + b * s.stride_c + i * s.ld_c + j];
              c = acc ? c + sum : sum;
            }
      k->gemm(s, A.data(), B.data(), C.data(), nullptr);
      EXPECT_LT(rel_err(C, want), kFwdTol) << "trans " << t << " acc " << acc;  // the gaps keep their values too
    }
}

TEST_F(LayerTest, SoftmaxCrossEntropy) {
  const int N = 5, V = 11;
  auto logits = randn(N * V, 3.0f);
  std::vector<int32_t> tgt = {0, 3, 10, 7, 3};
  std::vector<float> probs = logits, loss(N);
  k->softmax_crossentropy_forward(probs.data(), loss.data(), tgt.data(), N, V);
  Vec ld = to_d(logits);
  double mean = 0;
  for (float x : loss) mean += x / N;
  EXPECT_NEAR(mean, ref::crossentropy(ld, tgt, N, V), 1e-5);
  k->softmax_crossentropy_backward(probs.data(), tgt.data(), N, V, 1.0f / N);
  auto f = [&] { return ref::crossentropy(ld, tgt, N, V); };
  EXPECT_LT(rel_err(probs, fd_grad(f, ld)), kBwdTol);
}

TEST_F(LayerTest, Encoder) {
  const int V = 7, T = 3, C = 4, N = 6;
  auto wte = randn(V * C), wpe = randn(T * C), r = randn(N * C);
  std::vector<int32_t> tok = {1, 6, 1, 0, 1, 3};
  std::vector<float> out(N * C), dwte(V * C), dwpe(T * C);
  k->encoder_forward(out.data(), tok.data(), wte.data(), wpe.data(), N, T, C);
  Vec wted = to_d(wte), wped = to_d(wpe);
  auto fwd = [&] {
    Vec o(N * C);
    for (int n = 0; n < N; ++n)
      for (int c = 0; c < C; ++c) o[n * C + c] = wted[tok[n] * C + c] + wped[(n % T) * C + c];
    return o;
  };
  EXPECT_LT(rel_err(out, fwd()), kFwdTol);
  k->encoder_backward(dwte.data(), dwpe.data(), r.data(), tok.data(), N, T, C);
  auto f = [&] { return dot(fwd(), r); };
  EXPECT_LT(rel_err(dwte, fd_grad(f, wted)), kBwdTol);
  EXPECT_LT(rel_err(dwpe, fd_grad(f, wped)), kBwdTol);
}

TEST_F(LayerTest, AdamWMatchesFormula) {
  const int n = 9;
  auto p = randn(n), g = randn(n), m = randn(n, 0.1f), v = randn(n, 0.1f);
  for (auto& x : v) x = std::abs(x);
  auto p0 = p, m0 = m, v0 = v;
  const float lr = 0.01f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  const long t = 3;
  k->adamw(p.data(), g.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, t);
  for (int i = 0; i < n; ++i) {
    double mm = b1 * m0[i] + (1 - b1) * g[i], vv = b2 * v0[i] + (1 - b2) * double(g[i]) * g[i];
    double mh = mm / (1 - std::pow(b1, t)), vh = vv / (1 - std::pow(b2, t));
    double pp = p0[i] - lr * (mh / (std::sqrt(vh) + eps) + wd * p0[i]);
    EXPECT_NEAR(p[i], pp, 1e-6);
    EXPECT_NEAR(m[i], mm, 1e-6);
  }
}

TEST_F(LayerTest, OuterNesterovMatchesFormula) {
  std::vector<float> anchor = {1, 2, 3}, mom = {0.5f, 0, -1}, delta = {0.1f, -0.2f, 0.3f};
  k->outer_nesterov(anchor.data(), mom.data(), delta.data(), 3, 0.7f, 0.9f);
  const double m0[3] = {0.5, 0, -1}, d[3] = {0.1, -0.2, 0.3}, a0[3] = {1, 2, 3};
  for (int i = 0; i < 3; ++i) {
    double m = 0.9 * m0[i] + d[i];
    EXPECT_NEAR(mom[i], m, 1e-6);
    EXPECT_NEAR(anchor[i], a0[i] - 0.7 * (d[i] + 0.9 * m), 1e-6);
  }
}

}  // namespace
