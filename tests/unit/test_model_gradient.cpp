// The whole model's analytic gradient (fp32) against central finite
// differences of the double-precision reference model, for every parameter.
#include <gtest/gtest.h>

#include <random>

#include "dipaco/model/model.hpp"
#include "reference.hpp"

using namespace dipaco;

TEST(ModelGradient, MatchesFiniteDifferencesForEveryParameter) {
  ModelShape s;
  s.V = 256, s.C = 8, s.L = 2, s.H = 2, s.T = 4, s.layers_per_level = {1, 1};
  const int B = 2, N = B * s.T;
  auto k = make_cpu_kernels();
  Model model(*k, s, B, Precision::fp32);
  auto p = init_params(s, model.layout(), 7);
  // Larger weights than the default init, so every term matters.
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 0.3f);
  for (auto& x : p) x += d(rng);
  std::vector<int32_t> tok(N), tgt(N);
  for (int i = 0; i < N; ++i) tok[i] = (i * 37 + 11) % 256, tgt[i] = (i * 91 + 5) % 256;

  std::vector<float> g(p.size(), 0.0f);
  double loss = model.forward(p.data(), tok.data(), tgt.data());
  model.backward(p.data(), g.data(), tok.data(), tgt.data(), 1.0f / N);

  ref::Vec pd(p.begin(), p.end());
  EXPECT_NEAR(loss, ref::model_loss(s, pd, tok, tgt, B), 1e-5);
  double num = 0, den = 0, worst = 0;
  size_t worst_i = 0;
  for (size_t i = 0; i < pd.size(); ++i) {
    double gd = ref::fd([&] { return ref::model_loss(s, pd, tok, tgt, B); }, pd, i);
    double e = std::abs(g[i] - gd);
    num += e * e, den += gd * gd;
    if (e > worst) worst = e, worst_i = i;
  }
  double rel = std::sqrt(num / den);
  EXPECT_LT(rel, 1e-4) << "worst element " << worst_i << " off by " << worst;
  EXPECT_LT(worst, 2e-5);
}
