// The inner optimizer's arena runs: one AdamW launch for many tensors.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "dipaco/model/model.hpp"
#include "small_model.hpp"
#include "dipaco/model/optimizer.hpp"

using namespace dipaco;

namespace {

std::vector<float> randn(size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace

// The runs tile the arena in order, each element with its own view's decay,
// and neighbours of one decay are merged (fewer runs than tensors).
TEST(Optimizer, AdamwRunsTileTheArenaWithEachViewsDecay) {
  const ParamLayout layout = make_layout(small_two_level_shape());
  const auto runs = adamw_runs(layout, 0.1f);
  std::vector<float> decay(layout.total, -1.0f);
  size_t next = 0, views = 0;
  for (const AdamwRun& r : runs) {
    EXPECT_EQ(r.offset, next);
    for (size_t i = r.offset; i < r.offset + r.size; ++i) decay[i] = r.weight_decay;
    next = r.offset + r.size;
  }
  EXPECT_EQ(next, layout.total);
  for (const auto& group : layout.groups)
    for (const auto& view : group.views) {
      ++views;
      for (size_t i = 0; i < view.size(); ++i)
        ASSERT_EQ(decay[group.offset + view.offset + i], view.decay ? 0.1f : 0.0f) << view.name;
    }
  EXPECT_LT(runs.size(), views);
  for (size_t i = 1; i < runs.size(); ++i) EXPECT_NE(runs[i].weight_decay, runs[i - 1].weight_decay);
}

// adamw_step (runs) is bitwise adamw per tensor, as it was.
TEST(Optimizer, AdamwStepIsAdamwPerTensor) {
  const ParamLayout layout = make_layout(small_two_level_shape());
  auto k = make_cpu_kernels();
  auto p = randn(layout.total, 1), g = randn(layout.total, 2), m = randn(layout.total, 3, 0.1f);
  auto v = randn(layout.total, 4, 0.1f);
  for (auto& x : v) x = std::abs(x);
  auto p2 = p, m2 = m, v2 = v;
  Deck::Train cfg{};
  cfg.beta1 = 0.9, cfg.beta2 = 0.95, cfg.eps = 1e-8, cfg.weight_decay = 0.1;
  for (long t : {1L, 2L, 3L}) {
    adamw_step(*k, layout, p.data(), g.data(), m.data(), v.data(), t, 1e-3, cfg);
    for (const auto& group : layout.groups)
      for (const auto& view : group.views) {
        const size_t o = group.offset + view.offset;
        k->adamw(p2.data() + o, g.data() + o, m2.data() + o, v2.data() + o, view.size(), 1e-3f, 0.9f, 0.95f, 1e-8f,
                 view.decay ? 0.1f : 0.0f, t);
      }
  }
  EXPECT_EQ(p, p2);
  EXPECT_EQ(m, m2);
  EXPECT_EQ(v, v2);
}
