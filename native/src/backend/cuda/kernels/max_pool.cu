// Max pooling without padding, channels-last.
#include <cfloat>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

__global__ void MaxPoolKernel(const float* x, int64_t h, int64_t w, int64_t c, int64_t kernel, int64_t stride, int64_t out_h,
                              int64_t out_w, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ch = i % c, ox = (i / c) % out_w, oy = (i / (c * out_w)) % out_h, b = i / (c * out_w * out_h);
    float m = -FLT_MAX;
    for (int64_t ky = 0; ky < kernel; ++ky) {
      for (int64_t kx = 0; kx < kernel; ++kx) m = fmaxf(m, x[((b * h + oy * stride + ky) * w + ox * stride + kx) * c + ch]);
    }
    y[i] = m;
  }
}

void LaunchMaxPool2d(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, int64_t kernel, int64_t stride,
                     int64_t out_h, int64_t out_w, float* y, cudaStream_t stream) {
  const int64_t n = batch * out_h * out_w * c;
  if (n == 0) return;
  MaxPoolKernel<<<GridFor(n), kThreads, 0, stream>>>(x, h, w, c, kernel, stride, out_h, out_w, y, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
