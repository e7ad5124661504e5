// Inference BatchNorm folded to a per-channel affine map, then ReLU (the conv stem).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

__global__ void ChannelAffineKernel(float* y, int64_t rows, int64_t cols, const float* scale, const float* shift, bool relu) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % cols;
    const float v = y[i] * scale[c] + shift[c];
    y[i] = relu ? fmaxf(v, 0.0f) : v;
  }
}

void LaunchChannelAffine(float* y, int64_t rows, int64_t cols, const float* scale, const float* shift, bool relu,
                         cudaStream_t stream) {
  if (rows * cols == 0) return;
  ChannelAffineKernel<<<GridFor(rows * cols), kThreads, 0, stream>>>(y, rows, cols, scale, shift, relu);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
