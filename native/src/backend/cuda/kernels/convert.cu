// float32 -> float16 / bfloat16, round to nearest even: weights once at load, activations before
// each half-precision product; and 16-bit -> float32 (exact) where a float32 consumer reads a
// 16-bit result.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

__global__ void ToHalfKernel(const float* src, __half* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = __float2half_rn(src[i]);
  }
}

__global__ void ToBfloat16Kernel(const float* src, __nv_bfloat16* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = __float2bfloat16_rn(src[i]);
  }
}

__global__ void HalfToFloatKernel(const __half* src, float* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = __half2float(src[i]);
  }
}

__global__ void Bfloat16ToFloatKernel(const __nv_bfloat16* src, float* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = __bfloat162float(src[i]);
  }
}

void LaunchConvertToFloat(const void* src, int64_t n, bool bfloat16, float* dst, cudaStream_t stream) {
  if (n == 0) return;
  if (bfloat16) {
    Bfloat16ToFloatKernel<<<GridFor(n), kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(src), dst, n);
  } else {
    HalfToFloatKernel<<<GridFor(n), kThreads, 0, stream>>>(static_cast<const __half*>(src), dst, n);
  }
  CUDA_CHECK_LAUNCH();
}

void LaunchConvert(const float* src, int64_t n, bool bfloat16, void* dst, cudaStream_t stream) {
  if (n == 0) return;
  if (bfloat16) {
    ToBfloat16Kernel<<<GridFor(n), kThreads, 0, stream>>>(src, static_cast<__nv_bfloat16*>(dst), n);
  } else {
    ToHalfKernel<<<GridFor(n), kThreads, 0, stream>>>(src, static_cast<__half*>(dst), n);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
