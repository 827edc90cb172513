// Every layer's forward against the double-precision reference, and every
// backward against central finite differences of that reference.
#include <gtest/gtest.h>

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
  std::vector<float> q(B * T * C), kk(B * T * C), v(B * T * C), att(B * H * T * T), y(B * T * C), out(B * T * C);
  AttentionSaved s{q.data(), kk.data(), v.data(), att.data(), y.data()};
  attention_forward(*k, out.data(), s, qkv.data(), B, T, H, D, Precision::fp32);
  Vec qd = to_d(qkv);
  EXPECT_LT(rel_err(out, ref::attention(qd, B, T, H, D)), kFwdTol);

  std::vector<float> dqkv(B * T * 3 * C), scratch(3 * B * T * C + 2 * B * H * T * T);
  attention_backward(*k, dqkv.data(), r.data(), s, scratch.data(), B, T, H, D, Precision::fp32);
  auto f = [&] { return dot(ref::attention(qd, B, T, H, D), r); };
  EXPECT_LT(rel_err(dqkv, fd_grad(f, qd)), kBwdTol);
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
