// The per-step divergence check: a loss or gradient norm that is not finite,
// or a loss above train.diverge_factor x the running mean of accepted losses.
#include <gtest/gtest.h>

#include <cmath>

#include "dipaco/train/divergence.hpp"

using namespace dipaco;

TEST(DivergenceCheck, NotFiniteOrAboveTheFactorTimesTheRunningMean) {
  DivergenceCheck c(4);
  EXPECT_NE(c.verdict(NAN, 1), "");
  EXPECT_NE(c.verdict(2, INFINITY), "");
  EXPECT_EQ(c.verdict(50, 1), "");  // no running mean yet
  c.accept(5);
  EXPECT_EQ(c.verdict(19, 1), "");
  EXPECT_NE(c.verdict(21, 1), "");
  DivergenceCheck off(0);
  off.accept(5);
  EXPECT_EQ(off.verdict(1e6, 1), "");
  EXPECT_NE(off.verdict(NAN, 1), "");
}
