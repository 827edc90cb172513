// Error checking for the CUDA backend: every runtime and cuBLAS call goes
// through DIPACO_CUDA / DIPACO_CUBLAS, which throw with the call site.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace dipaco::cuda {

[[noreturn]] inline void fail(const char* what, const char* detail, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error at ") + file + ":" + std::to_string(line) + ": " + what + ": " +
                           detail);
}

inline void check(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess) fail(what, cudaGetErrorString(e), file, line);
}

inline void check(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) fail(what, cublasGetStatusString(s), file, line);
}

}  // namespace dipaco::cuda

#define DIPACO_CUDA(call) ::dipaco::cuda::check((call), #call, __FILE__, __LINE__)
#define DIPACO_CUBLAS(call) ::dipaco::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: catches bad launch configurations (not faults inside the kernel).
#define DIPACO_LAUNCHED() ::dipaco::cuda::check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
