// Outer-gradient encodings: sizes, block layout, and every decoded value
// within the type's bound of the original, for random blocks and edge cases.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "dipaco/train/outer_codec.hpp"

using namespace dipaco;

namespace {

const OuterDtype kLossy[] = {OuterDtype::bf16, OuterDtype::int8, OuterDtype::fp4};

std::vector<float> random_values(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::uniform_real_distribution<float> mag(-8, 3);
  std::vector<float> x(n);
  // Blocks of very different magnitudes: each block's own scale must serve it.
  for (size_t b = 0; b < n; b += OuterCodec::kBlock) {
    const float s = std::pow(10.0f, mag(g));
    for (size_t i = b; i < std::min(n, b + OuterCodec::kBlock); ++i) x[i] = s * d(g);
  }
  return x;
}

}  // namespace

TEST(OuterCodec, SizesPerBlock) {
  EXPECT_EQ(OuterCodec(OuterDtype::fp32).bytes(300), 1200u);
  EXPECT_EQ(OuterCodec(OuterDtype::bf16).bytes(300), 600u);
  EXPECT_EQ(OuterCodec(OuterDtype::int8).bytes(300), 2 * (4 + 128) + (4 + 44));
  EXPECT_EQ(OuterCodec(OuterDtype::fp4).bytes(300), 2 * (4 + 64) + (4 + 22));
  EXPECT_EQ(OuterCodec(OuterDtype::fp4).bytes(129), (4 + 64) + (4 + 1));
  EXPECT_EQ(choice_of<OuterDtype>("int8"), OuterDtype::int8);
  EXPECT_EQ(choice_of<OuterDtype>("fp8"), std::nullopt);
}

TEST(OuterCodec, DecodedWithinTheBoundOfEachBlock) {
  for (OuterDtype t : kLossy) {
    const OuterCodec c(t);
    for (size_t n : {size_t(1), size_t(127), size_t(128), size_t(1000)}) {
      const auto x = random_values(n, unsigned(n) * 7 + unsigned(t));
      std::vector<uint8_t> w(c.bytes(n));
      std::vector<float> y(n);
      c.encode(x.data(), n, w.data());
      c.decode(w.data(), n, y.data());
      for (size_t b = 0; b < n; b += OuterCodec::kBlock) {
        const size_t e = std::min(n, b + OuterCodec::kBlock);
        double amax = 0;
        for (size_t i = b; i < e; ++i) amax = std::max(amax, double(std::fabs(x[i])));
        for (size_t i = b; i < e; ++i)
          ASSERT_LE(std::fabs(double(x[i]) - y[i]), c.error_bound(amax)) << name(t) << " n=" << n << " i=" << i;
      }
    }
  }
}

TEST(OuterCodec, ExactWhereTheTypeIs) {
  // Zeros, a block's largest magnitude and (fp4) the grid itself come back unchanged.
  std::vector<float> x(OuterCodec::kBlock, 0.0f), y(x.size());
  for (OuterDtype t : kLossy) {
    const OuterCodec c(t);
    std::vector<uint8_t> w(c.bytes(x.size()));
    c.encode(x.data(), x.size(), w.data());
    c.decode(w.data(), x.size(), y.data());
    for (float v : y) ASSERT_EQ(v, 0.0f);
  }
  const float grid[] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  std::vector<float> g(grid, grid + 15), h(15);
  const OuterCodec fp4(OuterDtype::fp4);
  std::vector<uint8_t> w(fp4.bytes(15));
  fp4.encode(g.data(), 15, w.data());
  fp4.decode(w.data(), 15, h.data());
  EXPECT_EQ(g, h);
  std::vector<float> big = {-3.0f, 0.25f, 2.5f}, back(3);
  const OuterCodec int8(OuterDtype::int8);
  std::vector<uint8_t> w8(int8.bytes(3));
  int8.encode(big.data(), 3, w8.data());
  int8.decode(w8.data(), 3, back.data());
  EXPECT_EQ(back[0], -3.0f);
}

TEST(OuterCodec, RangesOnBlockBoundariesAreSlices) {
  // Encoding a whole buffer equals encoding its block-aligned pieces one after the other.
  for (OuterDtype t : kLossy) {
    const OuterCodec c(t);
    const size_t n = 5 * OuterCodec::kBlock + 17;
    const auto x = random_values(n, 3);
    std::vector<uint8_t> whole(c.bytes(n)), parts(c.bytes(n));
    c.encode(x.data(), n, whole.data());
    const size_t cut = 2 * OuterCodec::kBlock;
    c.encode(x.data(), cut, parts.data());
    c.encode(x.data() + cut, n - cut, parts.data() + c.bytes(cut));
    EXPECT_EQ(whole, parts) << name(t);
  }
}

// A value that is not finite never decodes to a finite one: bf16 keeps NaN
// (any payload, either sign) and inf; an int8 or fp4 block holding one
// decodes to NaN throughout, its neighbours untouched.
TEST(OuterCodec, NotFiniteNeverDecodesFinite) {
  const float neg_nan = std::bit_cast<float>(0xFFFFFFFFu), low_nan = std::bit_cast<float>(0x7F800001u);
  for (OuterDtype t : kLossy) {
    const OuterCodec c(t);
    for (float bad : {NAN, -NAN, neg_nan, low_nan, INFINITY, -INFINITY}) {
      const size_t n = 3 * OuterCodec::kBlock;
      auto x = random_values(n, 11);
      x[OuterCodec::kBlock + 5] = bad;
      std::vector<uint8_t> w(c.bytes(n));
      std::vector<float> y(n);
      c.encode(x.data(), n, w.data());
      c.decode(w.data(), n, y.data());
      EXPECT_FALSE(std::isfinite(y[OuterCodec::kBlock + 5])) << name(t) << " " << bad;
      for (size_t i = OuterCodec::kBlock; i < 2 * OuterCodec::kBlock && t != OuterDtype::bf16; ++i)
        ASSERT_TRUE(std::isnan(y[i])) << name(t) << " " << bad << " i=" << i;
      for (size_t i = 0; i < OuterCodec::kBlock; ++i) {
        ASSERT_TRUE(std::isfinite(y[i])) << name(t);
        ASSERT_TRUE(std::isfinite(y[2 * OuterCodec::kBlock + i])) << name(t);
      }
    }
  }
}
