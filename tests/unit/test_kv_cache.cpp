// The KV-cache decoder against the full forward pass, and the sampler.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "dipaco/model/kv_cache.hpp"
#include "dipaco/model/model.hpp"
#include "dipaco/model/sampling.hpp"

namespace dipaco {
namespace {

ModelShape small_shape() {
  ModelShape s;
  s.C = 32, s.L = 3, s.H = 4, s.T = 24, s.layers_per_level = {2, 1};
  return s;
}

// Parameters with non-trivial gains and biases (the initialisation zeroes biases).
std::vector<float> random_params(const ModelShape& s, uint64_t seed) {
  std::vector<float> p = init_params(s, make_layout(s), seed);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> n(0.0f, 0.05f);
  for (float& x : p) x += n(rng);
  return p;
}

// Probabilities of the full forward pass over `window` (left-aligned, zero padded) at every position.
std::vector<float> full_probs(const ModelShape& s, const std::vector<float>& params, const std::vector<int>& window) {
  auto k = make_cpu_kernels();
  Model m(*k, s, 1, Precision::fp32);
  std::vector<int32_t> tok(s.T, 0);
  for (size_t i = 0; i < window.size(); ++i) tok[i] = window[i];
  m.forward(params.data(), tok.data(), tok.data());
  return std::vector<float>(m.probabilities(), m.probabilities() + size_t(s.T) * s.V);
}

TEST(KvCache, EveryPositionMatchesTheFullForwardPass) {
  const ModelShape s = small_shape();
  const auto params = random_params(s, 7);
  std::mt19937_64 rng(3);
  std::vector<int> window(s.T);
  for (int& t : window) t = int(rng() % 256);
  const auto full = full_probs(s, params, window);
  KvDecoder d(s, params);
  double worst = 0;
  for (int t = 0; t < s.T; ++t) {
    const auto& p = d.step(window[t]);
    for (int v = 0; v < s.V; ++v) worst = std::max(worst, double(std::fabs(p[v] - full[size_t(t) * s.V + v])));
  }
  EXPECT_LT(worst, 2e-6);
  EXPECT_TRUE(d.full());
  EXPECT_THROW(d.step(1), std::logic_error);
}

TEST(KvCache, RefillStartsPositionsAgain) {
  const ModelShape s = small_shape();
  const auto params = random_params(s, 8);
  std::vector<int> w = {72, 101, 108, 108, 111, 32, 119};
  const auto full = full_probs(s, params, w);
  KvDecoder d(s, params);
  for (int i = 0; i < s.T; ++i) d.step(65 + i % 20);  // a full cache of other text
  const auto& p = d.prefill(w);
  EXPECT_EQ(d.position(), int(w.size()));
  for (int v = 0; v < s.V; ++v) EXPECT_NEAR(p[v], full[(w.size() - 1) * s.V + v], 2e-6);
}

TEST(KvCache, GreedyDecodingTakesTheArgmaxOfTheFullModel) {
  const ModelShape s = small_shape();
  const auto params = random_params(s, 9);
  std::vector<int> text = {84, 104, 101, 32};
  KvDecoder d(s, params);
  std::vector<float> probs = d.prefill(text);
  std::mt19937_64 rng(1);
  Sampling greedy;
  greedy.temperature = 0;
  while (int(text.size()) < s.T) {
    const int next = sample_byte(probs, greedy, rng);
    const auto full = full_probs(s, params, text);
    int best = 1;  // byte 0 (end of document) is never chosen
    for (int v = 2; v < s.V; ++v)
      if (full[(text.size() - 1) * s.V + v] > full[(text.size() - 1) * s.V + best]) best = v;
    ASSERT_EQ(next, best) << "at byte " << text.size();
    text.push_back(next);
    if (int(text.size()) < s.T) probs = d.step(next);
  }
}

TEST(Sampling, TemperatureZeroIsGreedyAndNeverByteZero) {
  std::vector<float> p(256, 0.001f);
  p[0] = 0.5f, p[66] = 0.2f;
  std::mt19937_64 rng(1);
  Sampling s;
  s.temperature = 0;
  EXPECT_EQ(sample_byte(p, s, rng), 66);
  EXPECT_EQ(greedy_byte(p), 66);
}

TEST(Sampling, TopKAndTopPKeepOnlyTheLikeliest) {
  std::vector<float> p(256, 0.0f);
  p[10] = 0.5f, p[11] = 0.3f, p[12] = 0.15f, p[13] = 0.05f;
  std::mt19937_64 rng(5);
  Sampling k2;
  k2.temperature = 1, k2.top_k = 2;
  Sampling p6;
  p6.temperature = 1, p6.top_p = 0.6;  // 0.5 < 0.6: needs the second byte too
  std::vector<int> seen_k(256, 0), seen_p(256, 0), seen_all(256, 0);
  Sampling all;
  all.temperature = 1;
  for (int i = 0; i < 4000; ++i) {
    ++seen_k[sample_byte(p, k2, rng)];
    ++seen_p[sample_byte(p, p6, rng)];
    ++seen_all[sample_byte(p, all, rng)];
  }
  EXPECT_GT(seen_k[10], 0);
  EXPECT_GT(seen_k[11], 0);
  EXPECT_EQ(seen_k[12] + seen_k[13], 0);
  EXPECT_EQ(seen_p[12] + seen_p[13], 0);
  EXPECT_GT(seen_p[11], 0);
  EXPECT_GT(seen_all[13], 0);  // without a cut every byte with mass appears
}

TEST(Sampling, DeterministicForASeed) {
  std::vector<float> p(256);
  for (int v = 0; v < 256; ++v) p[v] = float(v % 7 + 1);
  Sampling s;
  s.temperature = 0.9, s.top_p = 0.95;
  auto draw = [&](uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int> out;
    for (int i = 0; i < 50; ++i) out.push_back(sample_byte(p, s, rng));
    return out;
  };
  EXPECT_EQ(draw(4), draw(4));
  EXPECT_NE(draw(4), draw(5));
}

}  // namespace
}  // namespace dipaco
