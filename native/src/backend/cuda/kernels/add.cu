// Residual adds: y += x, and y[r, :] += x[r % period, :] (positions shared by a batch).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

__global__ void AddKernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] += x[i];
  }
}

__global__ void AddRowsKernel(float* y, const float* x, int64_t rows, int64_t cols, int64_t period) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    y[i] += x[(r % period) * cols + c];
  }
}

void LaunchAddInPlace(float* y, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  AddKernel<<<GridFor(n), kThreads, 0, stream>>>(y, x, n);
  CUDA_CHECK_LAUNCH();
}

void LaunchAddRowsBroadcast(float* y, const float* x, int64_t rows, int64_t cols, int64_t period, cudaStream_t stream) {
  if (rows * cols == 0) return;
  AddRowsKernel<<<GridFor(rows * cols), kThreads, 0, stream>>>(y, x, rows, cols, period);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
