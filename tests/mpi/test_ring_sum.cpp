// The compressed ring sum: against a serial reference of the same order of
// operations (so bitwise the same at every rank count and placement of the
// terms), within the codec's error of the exact sum, with error feedback
// that loses nothing over rounds, and sending what bytes_sent() says.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "dipaco/train/ring_sum.hpp"
#include "harness.hpp"

using namespace dipaco;
using namespace testing_mpi;

namespace {

std::vector<float> term_values(int t, size_t n, int round) {
  std::mt19937 g(unsigned(1000 * t + round));
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = d(g) * (1.0f + float(i % 7)) * 1e-3f;
  return x;
}

// Chunk c of S sums the terms c+1, ..., c (mod S), encoded after each one.
std::vector<float> reference(const OuterCodec& codec, std::vector<std::vector<float>>& terms,
                             std::vector<std::vector<float>>* errors, size_t n) {
  const size_t S = terms.size(), blocks = (n + OuterCodec::kBlock - 1) / OuterCodec::kBlock;
  auto start = [&](size_t c) { return std::min(n, c * blocks / S * OuterCodec::kBlock); };
  std::vector<float> out(n);
  for (size_t c = 0; c < S; ++c) {
    const size_t lo = start(c), m = start(c + 1) - lo;
    if (!m) continue;
    std::vector<float> acc(m, 0.0f), dec(m);
    std::vector<uint8_t> w(codec.bytes(m));
    for (size_t j = 1; j <= S; ++j) {
      const size_t t = (c + j) % S;
      for (size_t i = 0; i < m; ++i) acc[i] += terms[t][lo + i] + (errors ? (*errors)[t][lo + i] : 0.0f);
      codec.encode(acc.data(), m, w.data());
      codec.decode(w.data(), m, dec.data());
      if (errors)
        for (size_t i = 0; i < m; ++i) (*errors)[t][lo + i] = acc[i] - dec[i];
      acc = dec;
    }
    std::copy(acc.begin(), acc.end(), out.begin() + lo);
  }
  return out;
}

// Term t lives on rank owner(t): `per` consecutive terms a rank, the last
// ranks possibly holding none (they only receive the sum).
struct Placement {
  int S, per;
  int owner(int t) const { return t / per; }
};

void check(OuterDtype dtype, int S, size_t n, bool feedback) {
  const OuterCodec codec(dtype);
  const int size = world_size(), rank = world_rank();
  const Placement pl{S, std::max(1, (S + size - 1) / size)};
  std::vector<int> owners(S);
  for (int t = 0; t < S; ++t) owners[t] = pl.owner(t);
  std::vector<std::vector<float>> all_errors(S, std::vector<float>(n, 0.0f)), my_errors(S, std::vector<float>(n, 0.0f));
  RingSum ring;
  std::vector<double> exact_total(n, 0.0), sent_total(n, 0.0);
  for (int round = 0; round < 3; ++round) {
    std::vector<std::vector<float>> terms(S);
    for (int t = 0; t < S; ++t) terms[t] = term_values(t, n, round);
    std::vector<RingTerm> mine;
    for (int t = 0; t < S; ++t)
      if (pl.owner(t) == rank) mine.push_back({terms[t].data(), feedback ? my_errors[t].data() : nullptr});
    std::vector<float> out(n);
    const double sent = ring.sum(codec, mine, owners, n, MPI_COMM_WORLD, out.data());
    EXPECT_EQ(sent, RingSum::bytes_sent(codec, owners, n, rank, size));
    const auto ref = reference(codec, terms, feedback ? &all_errors : nullptr, n);
    ASSERT_EQ(out, ref) << name(dtype) << " S=" << S << " n=" << n << " round " << round;
    for (int t = 0; t < S; ++t)
      if (pl.owner(t) == rank && feedback) ASSERT_EQ(my_errors[t], all_errors[t]);
    // Within the codec's error of the exact sum: S encodings of partial sums no larger than S terms.
    double amax = 0;
    for (size_t i = 0; i < n; ++i) {
      double e = 0;
      for (int t = 0; t < S; ++t) e += terms[t][i];
      exact_total[i] += e, sent_total[i] += out[i];
      for (int t = 0; t < S; ++t) amax = std::max(amax, std::fabs(double(terms[t][i])));
    }
    for (size_t i = 0; i < n && !feedback; ++i) {
      double e = 0;
      for (int t = 0; t < S; ++t) e += terms[t][i];
      ASSERT_NEAR(out[i], e, S * codec.error_bound(2 * S * amax) + 1e-6) << name(dtype) << " i=" << i;
    }
  }
  if (feedback) {
    // Error feedback: what was sent plus what is still held equals every term ever summed.
    for (size_t i = 0; i < n; ++i) {
      double held = 0;
      for (int t = 0; t < S; ++t) held += all_errors[t][i];
      ASSERT_NEAR(sent_total[i] + held, exact_total[i], 1e-6 * (1 + std::fabs(exact_total[i]))) << "i=" << i;
    }
  }
}

}  // namespace

TEST(RingSum, SameAsTheSerialOrderAtAnyRankCount) {
  for (OuterDtype t : {OuterDtype::fp32, OuterDtype::bf16, OuterDtype::int8, OuterDtype::fp4})
    for (int S : {1, 2, 3, 4, 8})
      for (size_t n : {size_t(5), size_t(1000), size_t(3000)}) check(t, S, n, false);
}

TEST(RingSum, ErrorFeedbackLosesNothingOverRounds) {
  for (OuterDtype t : {OuterDtype::bf16, OuterDtype::int8, OuterDtype::fp4})
    for (int S : {1, 3, 4}) check(t, S, 2000, true);
}

TEST(RingSum, TrafficPerRankIsAboutTwiceTheEncodedSize) {
  // Every rank holding terms: each sends bytes(n) in the reduce-scatter and
  // (R-1)/R of it in the all-gather, whatever the number of terms.
  const OuterCodec int8(OuterDtype::int8);
  const size_t n = 1 << 20;
  for (int R : {2, 4, 16, 64}) {
    std::vector<int> owners;
    for (int r = 0; r < R; ++r) owners.push_back(r), owners.push_back(r);  // two paths a rank
    const double encoded = double(int8.bytes(n));
    for (int r = 0; r < R; ++r) {
      const double b = RingSum::bytes_sent(int8, owners, n, r, R);
      EXPECT_NEAR(b / encoded, 1.0 + double(R - 1) / R, 0.02) << "R=" << R << " rank " << r;
    }
  }
}

// A term that is not finite: the ring's sum is NaN in that codec block on
// every rank, never a finite value made from it (int8 once mapped NaN to numbers).
TEST(RingSum, NotFiniteTermGivesNaNNotNumbers) {
  const int size = world_size(), rank = world_rank();
  const size_t n = 4 * OuterCodec::kBlock;
  for (OuterDtype dtype : {OuterDtype::bf16, OuterDtype::int8, OuterDtype::fp4}) {
    const OuterCodec codec(dtype);
    std::vector<int> owners(size);
    for (int t = 0; t < size; ++t) owners[t] = t;
    std::vector<float> term = term_values(rank, n, 0);
    if (rank == size - 1) term[OuterCodec::kBlock + 3] = NAN;
    std::vector<float> out(n);
    RingSum ring;
    ring.sum(codec, {RingTerm{term.data(), nullptr}}, owners, n, MPI_COMM_WORLD, out.data());
    EXPECT_TRUE(std::isnan(out[OuterCodec::kBlock + 3])) << name(dtype);
    for (size_t i = 0; i < OuterCodec::kBlock; ++i) ASSERT_TRUE(std::isfinite(out[i])) << name(dtype);
  }
}
