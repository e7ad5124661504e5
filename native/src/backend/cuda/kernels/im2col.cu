// im2col for the convolutions (NCHW input, rows = output pixels in (batch, y, x) order, columns in
// the weight's (channel, ky, kx) order) so cuBLAS computes the conv as one product, channels-last.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

__global__ void Im2colKernel(const float* x, int64_t in_c, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t stride,
                             int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w, float* cols, int64_t n) {
  const int64_t patch = in_c * kh * kw;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = i / patch, e = i % patch;
    const int64_t b = p / (out_h * out_w), oy = (p / out_w) % out_h, ox = p % out_w;
    const int64_t c = e / (kh * kw), ky = (e / kw) % kh, kx = e % kw;
    const int64_t iy = oy * stride + ky - pad_top, ix = ox * stride + kx - pad_left;
    cols[i] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[((b * in_c + c) * h + iy) * w + ix] : 0.0f;
  }
}

void LaunchIm2col(const float* x, int64_t batch, int64_t in_c, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t stride,
                  int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w, float* cols, cudaStream_t stream) {
  const int64_t n = batch * out_h * out_w * in_c * kh * kw;
  if (n == 0) return;
  Im2colKernel<<<GridFor(n), kThreads, 0, stream>>>(x, in_c, h, w, kh, kw, stride, pad_top, pad_left, out_h, out_w, cols, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
