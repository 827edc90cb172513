// Error checking for the CUDA backend: every runtime and cuBLAS call goes
// through DIPACO_CUDA / DIPACO_CUBLAS, which throw with the call site.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdlib>
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

// DIPACO_CUDA_SYNC=1 waits after every kernel, so a fault inside a kernel is
// reported at its own launch rather than at some later call.
inline bool sync_after_launch() {
  static const bool on = [] {
    const char* v = std::getenv("DIPACO_CUDA_SYNC");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}

inline void check_launch(const char* file, int line) {
  check(cudaGetLastError(), "kernel launch", file, line);
  if (sync_after_launch()) check(cudaDeviceSynchronize(), "kernel (DIPACO_CUDA_SYNC)", file, line);
}

}  // namespace dipaco::cuda

#define DIPACO_CUDA(call) ::dipaco::cuda::check((call), #call, __FILE__, __LINE__)
#define DIPACO_CUBLAS(call) ::dipaco::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: catches bad launch configurations, and with
// DIPACO_CUDA_SYNC=1 faults inside the kernel too.
#define DIPACO_LAUNCHED() ::dipaco::cuda::check_launch(__FILE__, __LINE__)
