// A path's gradient all-reduce where the gradient lies: on the GPUs, through
// NCCL, so that it never goes through host memory (replica_mode = data with
// several GPUs per path). NCCL is loaded at run time (libnccl.so.2), so a
// binary built with it still runs, on MPI, where the library is absent.
#pragma once
#include <mpi.h>

#include <memory>
#include <string>

#include "dipaco/model/kernels.hpp"

namespace dipaco {

class DeviceSum {
 public:
  virtual ~DeviceSum() = default;
  // x (n floats of device memory) = its sum over the communicator's ranks, in
  // place, queued on the kernels' stream. Every rank calls it.
  virtual void sum(float* x, size_t n) = 0;
};

// Collective over comm. mode (run.path_allreduce): "mpi" gives null; "auto"
// gives NCCL where the kernels are CUDA and every rank could load and set it
// up, else null with the reason in *why; "nccl" throws where auto would fall back.
std::unique_ptr<DeviceSum> make_device_sum(PathAllreduce mode, const Kernels& k, MPI_Comm comm, std::string* why);

}  // namespace dipaco
