// Collectives in pieces (MPI counts are int): with a tiny piece size, the
// pieces give exactly what one call gives, at every rank count.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "dipaco/dist/pieces.hpp"
#include "harness.hpp"

using namespace dipaco;
using namespace testing_mpi;

TEST(Pieces, AllreduceMatchesOneCall) {
  const size_t n = 1000;
  std::vector<double> a(n), b;
  for (size_t i = 0; i < n; ++i) a[i] = double(i % 17) * (world_rank() + 1) + 0.25;
  b = a;
  MPI_Allreduce(MPI_IN_PLACE, a.data(), int(n), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  allreduce_pieces(b.data(), n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, 7);  // 143 pieces, the last of 6
  EXPECT_EQ(a, b);
  std::vector<double> none;
  allreduce_pieces(none.data(), 0, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, 7);  // still meets the others
}

TEST(Pieces, BcastMatchesOneCall) {
  std::vector<float> x(101);
  if (world_rank() == 0) std::iota(x.begin(), x.end(), 3.0f);
  bcast_pieces(x.data(), x.size(), MPI_FLOAT, 0, MPI_COMM_WORLD, 10);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i], 3.0f + float(i));
}
