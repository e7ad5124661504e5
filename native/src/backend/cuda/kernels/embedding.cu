// Token embedding lookup plus learned absolute positions (ids already on the device, validated).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

__global__ void EmbeddingKernel(const int32_t* ids, int64_t tokens, int64_t seq, const float* table, const float* positions,
                                int64_t dim, float* out) {
  const int64_t n = tokens * dim;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / dim, c = i % dim;
    float v = table[static_cast<int64_t>(ids[t]) * dim + c];
    if (positions != nullptr) v += positions[(t % seq) * dim + c];
    out[i] = v;
  }
}

void LaunchEmbeddingLookup(const int32_t* ids, int64_t batch, int64_t seq, const float* table, const float* positions,
                           int64_t dim, float* out, cudaStream_t stream) {
  const int64_t n = batch * seq * dim;
  if (n == 0) return;
  EmbeddingKernel<<<GridFor(n), kThreads, 0, stream>>>(ids, batch * seq, seq, table, positions, dim, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
