// Whether the CUDA backend can run here, and if not, why, in words a user can act on.
#include <cuda_runtime_api.h>

#include <string>

#include "backend/backend.h"
#include "backend/cuda/cublas_library.h"
#include "backend/cuda/cublaslt_library.h"

namespace perceiver {

CudaStatus ProbeCuda() {
  CudaStatus s;
  s.compiled = true;
  if (cudaRuntimeGetVersion(&s.runtime_version) != cudaSuccess) s.runtime_version = 0;
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) {
    (void)cudaGetLastError();
    s.reason = "no NVIDIA driver was found (libcuda.so); install the NVIDIA driver to use a GPU";
    return s;
  }
  s.driver_version = driver;
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    s.reason = status == cudaErrorInsufficientDriver
                   ? "the NVIDIA driver (" + std::to_string(driver / 1000) + "." + std::to_string(driver % 1000 / 10) +
                         ") is older than this build's CUDA runtime needs; update the driver"
                   : std::string("no CUDA device is visible (") + cudaGetErrorString(status) +
                         "); check CUDA_VISIBLE_DEVICES and that the GPU is present";
    return s;
  }
  s.device_count = count;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) {
      s.devices.push_back(std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
                          std::to_string(prop.totalGlobalMem >> 30) + " GiB)");
    }
  }
  std::string detail;
  if (!cuda::CublasLoadable(&detail)) {
    s.reason = detail;
    return s;
  }
  s.cublas = detail;
  // cuBLASLt is optional: without it products take cuBLAS's GemmEx (cuda_backend.cc).
  std::string lt_missing;
  const cuda::lt::Library* lt = cuda::lt::Load(&lt_missing);
  s.cublaslt = lt != nullptr ? lt->path : "not loaded: " + lt_missing;
  s.available = true;
  return s;
}

void CudaMemoryInfo(int device, size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = *total_bytes = 0;
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess || cudaSetDevice(device) != cudaSuccess) {
    (void)cudaGetLastError();
    return;
  }
  if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) (void)cudaGetLastError();
  cudaSetDevice(previous);
}

}  // namespace perceiver
