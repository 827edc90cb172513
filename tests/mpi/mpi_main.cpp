// GoogleTest under mpirun: MPI is initialised once; only rank 0 prints
// (DIPACO_TEST_ALL_RANKS=1: every rank, to see a failure on another rank).
// Each rank's files go to its own scratch directory, removed at the end.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>

#include "../unit/scratch_dir.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  static ScratchDir scratch;
  ::testing::InitGoogleTest(&argc, argv);
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0 && !std::getenv("DIPACO_TEST_ALL_RANKS")) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS();
  // Any rank's failure fails the job.
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
