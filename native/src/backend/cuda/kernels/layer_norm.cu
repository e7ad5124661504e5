// LayerNorm over the last dimension: one block per row, two-pass mean and variance reduced in
// shared memory (the CPU kernel's arithmetic, in float).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

namespace {

constexpr int kBlock = 256;

__device__ float BlockSum(float v, float* shared) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? shared[threadIdx.x] : 0.0f;
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  const float total = shared[0];
  __syncthreads();
  return total;
}

__global__ void LayerNormKernel(const float* x, int64_t dim, const float* gamma, const float* beta, float eps, float* y) {
  __shared__ float shared[32];
  const float* xr = x + blockIdx.x * dim;
  float* yr = y + blockIdx.x * dim;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += xr[i];
  const float mean = BlockSum(sum, shared) / static_cast<float>(dim);
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float d = xr[i] - mean;
    sq += d * d;
  }
  const float inv_std = rsqrtf(BlockSum(sq, shared) / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = (xr[i] - mean) * inv_std * gamma[i] + beta[i];
}

}  // namespace

void LaunchLayerNorm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps, float* y,
                     cudaStream_t stream) {
  if (rows == 0) return;
  if (rows > 0x7fffffff) ThrowInvalidArgument("layer_norm rows", "at most 2^31 - 1 rows", std::to_string(rows));
  LayerNormKernel<<<static_cast<unsigned>(rows), kBlock, 0, stream>>>(x, dim, gamma, beta, eps, y);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
