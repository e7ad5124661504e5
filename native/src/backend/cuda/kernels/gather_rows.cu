// dst[b, i, :] = src[b, indices[i], :] (indices on the device, validated).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

__global__ void GatherRowsKernel(float* dst, const float* src, const int64_t* indices, int64_t count, int64_t src_rows,
                                 int64_t cols, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % cols, row = i / cols, b = row / count, r = row % count;
    dst[i] = src[(b * src_rows + indices[r]) * cols + c];
  }
}

void LaunchGatherRows(float* dst, const float* src, const int64_t* indices, int64_t count, int64_t batch, int64_t src_rows,
                      int64_t cols, cudaStream_t stream) {
  const int64_t n = batch * count * cols;
  if (n == 0) return;
  GatherRowsKernel<<<GridFor(n), kThreads, 0, stream>>>(dst, src, indices, count, src_rows, cols, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
