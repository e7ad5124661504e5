// x *= alpha (optical flow's rescale).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

__global__ void ScaleKernel(float* x, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] *= alpha;
  }
}

void LaunchScale(float* x, int64_t n, float alpha, cudaStream_t stream) {
  if (n == 0) return;
  ScaleKernel<<<GridFor(n), kThreads, 0, stream>>>(x, n, alpha);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
