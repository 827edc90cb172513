// The memory estimate: its activation figure is what Model allocates, it is
// within 30% of the resident memory a real forward + backward adds, and a
// far too large deck is estimated at once without allocating anything.
#include <gtest/gtest.h>
#include <malloc.h>

#include <array>
#include <fstream>
#include <string>
#include <vector>

#include "dipaco/io/deck.hpp"
#include "dipaco/model/kernels.hpp"
#include "dipaco/dist/memory_estimate.hpp"
#include "dipaco/model/model.hpp"
#include "dipaco/dist/topology.hpp"
#include "dipaco/train/trainer.hpp"

using namespace dipaco;

namespace {

double vm_rss_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string key; in >> key;) {
    if (key == "VmRSS:") {
      double kb = 0;
      in >> kb;
      return kb * 1024;
    }
    in.ignore(1 << 12, '\n');
  }
  return 0;
}

ModelShape shape(int C, int L, int T) {
  ModelShape s;
  s.C = C, s.L = L, s.H = 4, s.T = T, s.layers_per_level = {L};
  return s;
}

// Resident memory added by one path's weights + gradient and a forward + backward pass.
double measured_step_bytes(Kernels& k, const ModelShape& s, int B) {
  // Free heap pages left by earlier tests go back to the system first: reused,
  // they would already be resident and the step would seem to cost nothing.
  malloc_trim(0);
  const double before = vm_rss_bytes();
  {
    Model m(k, s, B, Precision::fp32);
    std::vector<float> init = init_params(s, m.layout(), 1);
    DeviceBuffer<float> params(k, init.size()), grads(k, init.size());
    k.to_device(params.get(), init.data(), init.size() * sizeof(float));
    k.zero(grads.get(), init.size() * sizeof(float));
    std::vector<int32_t> tok(size_t(B) * s.T);
    for (size_t i = 0; i < tok.size(); ++i) tok[i] = int32_t(i * 7 % 256);
    DeviceBuffer<int32_t> t(k, tok.size());
    k.to_device(t.get(), tok.data(), tok.size() * sizeof(int32_t));
    m.forward(params.get(), t.get(), t.get());
    m.backward(params.get(), grads.get(), t.get(), t.get(), 1.0f);
    const double after = vm_rss_bytes();
    return after - before;
  }
}

}  // namespace

TEST(MemoryEstimate, ActivationsAreWhatModelAllocates) {
  auto k = make_kernels(Device::cpu);
  for (auto [C, L, T, B] : std::vector<std::array<int, 4>>{{32, 2, 64, 4}, {128, 4, 128, 16}, {64, 3, 32, 5}}) {
    for (Precision p : {Precision::fp32, Precision::bf16}) {  // bf16 holds its operands' copies too
      Model m(*k, shape(C, L, T), B, p);
      EXPECT_DOUBLE_EQ(model_activation_bytes(shape(C, L, T), B, k->has_fused_attention(C / 4), p == Precision::bf16),
                       double(m.activation_bytes()))
          << C << " " << L;
    }
  }
}

TEST(MemoryEstimate, WithinThirtyPercentOfResidentMemory) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's shadow memory and quarantine change resident memory";
#endif
  auto k = make_kernels(Device::cpu);
  measured_step_bytes(*k, shape(16, 1, 16), 2);  // thread pools and matmul kernels come up once, outside the figures
  for (auto [C, L, T, B] : std::vector<std::array<int, 4>>{{64, 2, 64, 8}, {128, 4, 128, 16}}) {
    const ModelShape s = shape(C, L, T);
    measured_step_bytes(*k, s, B);  // this shape's matmul primitives, created once per process
    const double estimate = model_activation_bytes(s, B, k->has_fused_attention(s.C / s.H)) + 2 * 4.0 * make_layout(s).total;
    const double measured = measured_step_bytes(*k, s, B);
    EXPECT_NEAR(measured / estimate, 1.0, 0.3) << "d_model " << C << ": estimate " << estimate / 1e6 << " MB, measured "
                                               << measured / 1e6 << " MB";
  }
}

TEST(MemoryEstimate, FarTooLargeDeckEstimatedWithoutAllocating) {
  Deck d = load_deck("", {"model.d_model=65536", "model.n_layers=64"});
  const Topology t = make_topology(d.dipaco.modules_per_level, 1);
  const MemoryEstimate e = estimate_memory(d, t, 0, 0);
  // 64 blocks of 12 C^2 weights, four arenas (weights, m, v, gradient) and more.
  EXPECT_GT(e.params, 4.0 * 4 * 64 * 12 * 65536.0 * 65536);
  EXPECT_GT(e.total(), e.params + e.activations);
  EXPECT_NE(e.describe().find("params+optimizer"), std::string::npos);
}

TEST(MemoryEstimate, PathsPerRankAndRanksPerPath) {
  Deck d = load_deck("", {"dipaco.modules_per_level=2,2", "model.layers_per_level=2,2", "dipaco.inner_steps=10"});
  const double one = estimate_memory(d, make_topology(d.dipaco.modules_per_level, 4), 0, 0).params;
  const double two = estimate_memory(d, make_topology(d.dipaco.modules_per_level, 2), 0, 0).params;
  const double arena = 4.0 * make_layout(model_shape(d)).total;
  EXPECT_NEAR(two - one, 3 * arena + 2 * 4.0 * make_layout(model_shape(d)).groups[2].size, 1.0);  // a path, a module
  // Eight ranks: two per path, each training a half batch (the routing features' Model keeps a whole one).
  const MemoryEstimate e8 = estimate_memory(d, make_topology(d.dipaco.modules_per_level, 8), 0, 0);
  EXPECT_DOUBLE_EQ(e8.activations, model_activation_bytes(model_shape(d), d.train.batch_size / 2, true) +
                                       model_activation_bytes(model_shape(d), d.train.batch_size, true));
}

TEST(MemoryEstimate, PeakResidentBytesFollowsWhatIsTouched) {
  const double before = peak_resident_bytes();
  ASSERT_GT(before, 0);
  double now = 0;  // VmRSS: an earlier test may have left the peak above what is resident now
  std::ifstream status("/proc/self/status");
  for (std::string key; status >> key;)
    if (key == "VmRSS:") status >> now, now *= 1024;
  ASSERT_GT(now, 0);
  {  // 64 MB more than the peak leaves room for: the peak rises by about 64 MB, and stays when it is freed
    std::vector<char> block(size_t(before - now) + (size_t(64) << 20));
    for (size_t i = 0; i < block.size(); i += 4096) block[i] = char(i);
    EXPECT_GE(peak_resident_bytes(), before + 60e6);
  }
  EXPECT_GE(peak_resident_bytes(), before + 60e6);
}
