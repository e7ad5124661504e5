// N-D strided copy (permutes, space-to-depth, subsampling, concatenation, broadcasting): one
// thread per element, the output index decomposed over the shape.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

struct CopyGeometry {
  int64_t shape[kMaxCopyRank];
  int64_t dst[kMaxCopyRank];
  int64_t src[kMaxCopyRank];
  int rank;
};

__global__ void StridedCopyKernel(float* dst, const float* src, CopyGeometry g, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = i, doff = 0, soff = 0;
    for (int d = g.rank - 1; d >= 0; --d) {
      const int64_t idx = rem % g.shape[d];
      rem /= g.shape[d];
      doff += idx * g.dst[d];
      soff += idx * g.src[d];
    }
    dst[doff] = src[soff];
  }
}

void LaunchStridedCopy(float* dst, const int64_t* dst_strides, const float* src, const int64_t* src_strides,
                       const int64_t* shape, int rank, cudaStream_t stream) {
  if (rank < 0 || rank > kMaxCopyRank) ThrowInvalidArgument("strided_copy rank", "a rank in [0, " + std::to_string(kMaxCopyRank) + "]", std::to_string(rank));
  CopyGeometry g{};
  g.rank = rank;
  int64_t n = 1;
  for (int d = 0; d < rank; ++d) {
    g.shape[d] = shape[d];
    g.dst[d] = dst_strides[d];
    g.src[d] = src_strides[d];
    n *= shape[d];
  }
  if (n == 0) return;
  StridedCopyKernel<<<GridFor(n), kThreads, 0, stream>>>(dst, src, g, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
