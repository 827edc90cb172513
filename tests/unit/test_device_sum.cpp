// A path's gradient sum on the GPUs (NCCL) is chosen only where it can work;
// what the CPU kernels get, and the errors a deck asking for NCCL meets.
#include <gtest/gtest.h>

#include "dipaco/dist/device_sum.hpp"
#include "dipaco/io/deck.hpp"

using namespace dipaco;

TEST(DeviceSum, CpuKernelsSumThroughMpi) {
  auto k = make_cpu_kernels();
  std::string why;
  EXPECT_EQ(make_device_sum(PathAllreduce::automatic, *k, MPI_COMM_NULL, &why), nullptr);
  EXPECT_NE(why.find("cpu"), std::string::npos) << why;
  EXPECT_EQ(make_device_sum(PathAllreduce::mpi, *k, MPI_COMM_NULL, &why), nullptr);
  try {
    make_device_sum(PathAllreduce::nccl, *k, MPI_COMM_NULL, &why);
    FAIL() << "nccl on CPU kernels was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("run.path_allreduce = nccl"), std::string::npos) << e.what();
  }
}

TEST(DeviceSum, DeckRefusesNcclWithoutCuda) {
  try {
    load_deck("", {"run.path_allreduce=nccl"});
    FAIL() << "run.path_allreduce = nccl on the CPU was accepted";
  } catch (const DeckError& e) {
    EXPECT_NE(std::string(e.what()).find("needs run.device = cuda"), std::string::npos) << e.what();
  }
  EXPECT_EQ(load_deck("", {"run.path_allreduce=mpi"}).run.path_allreduce, PathAllreduce::mpi);
}
