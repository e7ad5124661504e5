// y[b, :] = mean over n of x[b, n, :] (the projection decoder).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

__global__ void MeanRowsKernel(const float* x, int64_t n, int64_t cols, float* y, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / cols, c = i % cols;
    float sum = 0.0f;
    for (int64_t r = 0; r < n; ++r) sum += x[(b * n + r) * cols + c];
    y[i] = sum / static_cast<float>(n);
  }
}

void LaunchMeanRows(const float* x, int64_t batch, int64_t n, int64_t cols, float* y, cudaStream_t stream) {
  const int64_t total = batch * cols;
  if (total == 0) return;
  MeanRowsKernel<<<GridFor(total), kThreads, 0, stream>>>(x, n, cols, y, total);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
