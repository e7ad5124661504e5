// The product epilogue for the cases cuBLASLt's own epilogues cannot take: exact (erf) GELU
// (cuBLASLt has only the tanh form) and a 16-bit output with the residual added in float32. One
// pass: acc + bias, GELU, + residual, rounded once to the output type.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

namespace {

__device__ __forceinline__ void Store(float* y, float v) { *y = v; }
__device__ __forceinline__ void Store(__half* y, float v) { *y = __float2half_rn(v); }
__device__ __forceinline__ void Store(__nv_bfloat16* y, float v) { *y = __float2bfloat16_rn(v); }

template <typename TOut>
__global__ void BiasGeluKernel(BiasGeluArgs a) {
  const int64_t n = a.rows * a.cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / a.cols, c = i % a.cols;
    float v = a.acc[r * a.ld_acc + c];
    if (a.bias) v += a.bias[c];
    if (a.gelu) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
    if (a.residual) v += a.residual[(a.residual_period ? r % a.residual_period : r) * a.ld_residual + c];
    Store(static_cast<TOut*>(a.y) + r * a.ldy + c, v);
  }
}

}  // namespace

void LaunchBiasGelu(const BiasGeluArgs& a, cudaStream_t stream) {
  const int64_t n = a.rows * a.cols;
  if (n == 0) return;
  // A 16-bit y over the float acc would be written while other threads still read acc.
  if (a.y_dtype != DType::kFloat32 && static_cast<const void*>(a.acc) == a.y) {
    ThrowInvalidArgument("bias_gelu output", "a 16-bit output apart from its float32 input", "the output at the input's address");
  }
  switch (a.y_dtype) {
    case DType::kFloat32:
      BiasGeluKernel<float><<<GridFor(n), kThreads, 0, stream>>>(a);
      break;
    case DType::kBfloat16:
      BiasGeluKernel<__nv_bfloat16><<<GridFor(n), kThreads, 0, stream>>>(a);
      break;
    case DType::kFloat16:
      BiasGeluKernel<__half><<<GridFor(n), kThreads, 0, stream>>>(a);
      break;
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
