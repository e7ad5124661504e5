// CUDA_CHECK / CUBLAS_CHECK: every CUDA and cuBLAS status is checked and a failure becomes an
// EngineError (out-of-memory typed as such), never exit() or abort(), so Node survives it.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "core/engine_error.h"

namespace perceiver::cuda {

[[noreturn]] void ThrowCudaError(cudaError_t status, const char* what, const char* file, int line);
[[noreturn]] void ThrowCublasError(int status, const char* what, const char* file, int line);

}  // namespace perceiver::cuda

#define CUDA_CHECK(expr)                                                                         \
  do {                                                                                           \
    const cudaError_t perceiver_status_ = (expr);                                                \
    if (perceiver_status_ != cudaSuccess) ::perceiver::cuda::ThrowCudaError(perceiver_status_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: a bad configuration shows up here, an execution fault at the next sync.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(expr)                                                                          \
  do {                                                                                              \
    const int perceiver_status_ = static_cast<int>(expr);                                           \
    if (perceiver_status_ != 0) ::perceiver::cuda::ThrowCublasError(perceiver_status_, #expr, __FILE__, __LINE__); \
  } while (0)
