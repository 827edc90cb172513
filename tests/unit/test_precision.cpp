// The matmul precisions as the CPU computes them: tf32 is fp32 here, and the
// bf16 model's copies (each operand rounded once, not in every matmul) give
// bit for bit what rounding in every matmul gives.
#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

#include "dipaco/model/model.hpp"
#include "small_model.hpp"

using namespace dipaco;

namespace {

struct Step {
  double loss;
  std::vector<float> grads;
};

// One forward and backward of a fresh model on fixed tokens.
Step step(Kernels& k, const ModelShape& s, Precision p) {
  const int B = 2, N = B * s.T;
  std::vector<int32_t> tok(N), tgt(N);
  for (int i = 0; i < N; ++i) tok[i] = (i * 37 + 11) % 256, tgt[i] = (i * 91 + 5) % 256;
  Model model(k, s, B, p);
  auto params = init_params(s, model.layout(), 7);
  Step r{model.forward(params.data(), tok.data(), tgt.data()), std::vector<float>(params.size(), 0.0f)};
  model.backward(params.data(), r.grads.data(), tok.data(), tgt.data(), 1.0f / N);
  return r;
}

}  // namespace

// train.precision = tf32 is a tensor-core mode; the CPU computes it as fp32, bit for bit.
TEST(Precision, Tf32IsFp32OnTheCpu) {
  EXPECT_EQ(choice_of<Precision>("tf32"), Precision::tf32);
  EXPECT_EQ(choice_of<Precision>("bf16"), Precision::bf16);
  EXPECT_EQ(choice_of<Precision>("fp32"), Precision::fp32);
  auto k = make_cpu_kernels();
  const Step a = step(*k, small_two_level_shape(), Precision::fp32), b = step(*k, small_two_level_shape(), Precision::tf32);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.grads, b.grads);
}

// The bf16 model rounds the weights once a step and each matmul input once
// (DIPACO_BF16_COPIES=0: in every matmul, as before): the same bits either way,
// and a model that holds the copies in its activation bytes.
TEST(Precision, Bf16CopiesAreTheMatmulsOwnRounding) {
  auto k = make_cpu_kernels();
  const ModelShape s = small_two_level_shape();
  const Step with = step(*k, s, Precision::bf16);
  ::setenv("DIPACO_BF16_COPIES", "0", 1);
  const Step without = step(*k, s, Precision::bf16);
  const size_t plain = Model(*k, s, 2, Precision::bf16).activation_bytes();
  ::unsetenv("DIPACO_BF16_COPIES");
  EXPECT_EQ(with.loss, without.loss);
  EXPECT_EQ(with.grads, without.grads);
  EXPECT_GT(Model(*k, s, 2, Precision::bf16).activation_bytes(), plain);
  const Step fp32 = step(*k, s, Precision::fp32);
  EXPECT_NE(with.grads, fp32.grads);  // bf16 is really bf16
}
