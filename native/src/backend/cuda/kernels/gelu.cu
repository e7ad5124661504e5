// Exact (erf) GELU, in place.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

__global__ void GeluKernel(float* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
  }
}

void LaunchGelu(float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  GeluKernel<<<GridFor(n), kThreads, 0, stream>>>(x, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
