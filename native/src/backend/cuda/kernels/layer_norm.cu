// LayerNorm over the last dimension of x (+ residual), one pass over memory: a warp per row holds
// the row in registers (16-byte loads where rows are 16-byte aligned), so the mean and then the
// variance around it are reduced from registers (float32 statistics, the two-pass arithmetic
// without a second read); the output is float32, bfloat16 or float16; x + residual can be written
// back too. Rows wider than a warp's registers hold (kMaxWarpDim) take the block-per-row kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kMaxWarpDim = 2048;  // 64 floats per lane
constexpr int kBlock = 256;

__device__ __forceinline__ void Store(float* y, float v) { *y = v; }
__device__ __forceinline__ void Store(__half* y, float v) { *y = __float2half_rn(v); }
__device__ __forceinline__ void Store(__nv_bfloat16* y, float v) { *y = __float2bfloat16_rn(v); }

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Lane l holds elements (c * 32 + l) * VEC + [0, VEC) for c < CHUNKS.
template <typename TOut, int VEC, int CHUNKS>
__global__ void __launch_bounds__(32 * kWarpsPerBlock) LayerNormWarpKernel(LayerNormArgs a) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= a.rows) return;
  const int lane = threadIdx.x % 32;
  const int dim = static_cast<int>(a.dim);
  const float* x = a.x + row * a.ldx;
  const float* res = a.residual ? a.residual + row * a.ld_residual : nullptr;
  float v[CHUNKS][VEC];
  float sum = 0.0f;
#pragma unroll
  for (int c = 0; c < CHUNKS; ++c) {
    const int e = (c * 32 + lane) * VEC;
    if (e < dim) {  // dim % VEC == 0, so the whole vector is in the row
      if constexpr (VEC == 4) {
        const float4 xv = *reinterpret_cast<const float4*>(x + e);
        v[c][0] = xv.x, v[c][1] = xv.y, v[c][2] = xv.z, v[c][3] = xv.w;
        if (res) {
          const float4 rv = *reinterpret_cast<const float4*>(res + e);
          v[c][0] += rv.x, v[c][1] += rv.y, v[c][2] += rv.z, v[c][3] += rv.w;
        }
      } else {
#pragma unroll
        for (int u = 0; u < VEC; ++u) v[c][u] = x[e + u] + (res ? res[e + u] : 0.0f);
      }
    } else {
#pragma unroll
      for (int u = 0; u < VEC; ++u) v[c][u] = 0.0f;
    }
#pragma unroll
    for (int u = 0; u < VEC; ++u) sum += v[c][u];
  }
  const float mean = WarpSum(sum) / static_cast<float>(dim);
  float sq = 0.0f;
#pragma unroll
  for (int c = 0; c < CHUNKS; ++c) {
    if ((c * 32 + lane) * VEC < dim) {
#pragma unroll
      for (int u = 0; u < VEC; ++u) {
        const float d = v[c][u] - mean;
        sq += d * d;
      }
    }
  }
  const float inv_std = rsqrtf(WarpSum(sq) / static_cast<float>(dim) + a.eps);
  TOut* y = static_cast<TOut*>(a.y) + row * a.ldy;
  float* sum_out = a.sum_out ? a.sum_out + row * a.ld_sum : nullptr;
#pragma unroll
  for (int c = 0; c < CHUNKS; ++c) {
    const int e = (c * 32 + lane) * VEC;
    if (e >= dim) continue;
#pragma unroll
    for (int u = 0; u < VEC; ++u) {
      if (sum_out) sum_out[e + u] = v[c][u];
      Store(y + e + u, (v[c][u] - mean) * inv_std * a.gamma[e + u] + a.beta[e + u]);
    }
  }
}

__device__ float BlockSum(float v, float* shared) {
  v = WarpSum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? shared[threadIdx.x] : 0.0f;
  if (warp == 0) {
    v = WarpSum(v);
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  const float total = shared[0];
  __syncthreads();
  return total;
}

// Wide rows: a block per row, x (+ residual) read three times.
template <typename TOut>
__global__ void LayerNormBlockKernel(LayerNormArgs a) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const float* x = a.x + row * a.ldx;
  const float* res = a.residual ? a.residual + row * a.ld_residual : nullptr;
  auto value = [&](int64_t i) { return x[i] + (res ? res[i] : 0.0f); };
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < a.dim; i += blockDim.x) sum += value(i);
  const float mean = BlockSum(sum, shared) / static_cast<float>(a.dim);
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < a.dim; i += blockDim.x) {
    const float d = value(i) - mean;
    sq += d * d;
  }
  const float inv_std = rsqrtf(BlockSum(sq, shared) / static_cast<float>(a.dim) + a.eps);
  TOut* y = static_cast<TOut*>(a.y) + row * a.ldy;
  for (int64_t i = threadIdx.x; i < a.dim; i += blockDim.x) {
    const float s = value(i);
    if (a.sum_out) a.sum_out[row * a.ld_sum + i] = s;
    Store(y + i, (s - mean) * inv_std * a.gamma[i] + a.beta[i]);
  }
}

template <typename TOut, int VEC>
void LaunchWarp(const LayerNormArgs& a, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((a.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const int64_t per_lane = (a.dim + 32 * VEC - 1) / (32 * VEC);  // chunks each lane holds
  constexpr int kThreadsPerBlock = 32 * kWarpsPerBlock;
  if (per_lane <= 64 / (VEC * 8)) {
    LayerNormWarpKernel<TOut, VEC, 64 / (VEC * 8)><<<blocks, kThreadsPerBlock, 0, stream>>>(a);
  } else if (per_lane <= 64 / (VEC * 4)) {
    LayerNormWarpKernel<TOut, VEC, 64 / (VEC * 4)><<<blocks, kThreadsPerBlock, 0, stream>>>(a);
  } else if (per_lane <= 64 / (VEC * 2)) {
    LayerNormWarpKernel<TOut, VEC, 64 / (VEC * 2)><<<blocks, kThreadsPerBlock, 0, stream>>>(a);
  } else {
    LayerNormWarpKernel<TOut, VEC, 64 / VEC><<<blocks, kThreadsPerBlock, 0, stream>>>(a);
  }
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <typename TOut>
void LaunchFor(const LayerNormArgs& a, cudaStream_t stream) {
  if (a.dim > kMaxWarpDim) {
    if (a.rows > 0x7fffffff) ThrowInvalidArgument("layer_norm rows", "at most 2^31 - 1 rows", std::to_string(a.rows));
    LayerNormBlockKernel<TOut><<<static_cast<unsigned>(a.rows), kBlock, 0, stream>>>(a);
    return;
  }
  // 16-byte loads need every row of x and the residual to start 16-byte aligned.
  const bool vec4 = a.dim % 4 == 0 && a.ldx % 4 == 0 && Aligned16(a.x) &&
                    (a.residual == nullptr || (a.ld_residual % 4 == 0 && Aligned16(a.residual)));
  if (vec4) {
    LaunchWarp<TOut, 4>(a, stream);
  } else {
    LaunchWarp<TOut, 1>(a, stream);
  }
}

}  // namespace

void LaunchLayerNorm(const LayerNormArgs& a, cudaStream_t stream) {
  if (a.rows == 0 || a.dim == 0) return;
  if ((a.rows + kWarpsPerBlock - 1) / kWarpsPerBlock > 0x7fffffff) {
    ThrowInvalidArgument("layer_norm rows", "at most " + std::to_string(kWarpsPerBlock) + " x (2^31 - 1) rows", std::to_string(a.rows));
  }
  // A 16-bit y over x would overwrite rows other warps have not read yet.
  if (a.y_dtype != DType::kFloat32 && (a.y == static_cast<const void*>(a.x) || a.y == static_cast<const void*>(a.residual))) {
    ThrowInvalidArgument("layer_norm output", "a 16-bit output apart from its float32 input and residual", "the output at the input's address");
  }
  switch (a.y_dtype) {
    case DType::kFloat32:
      LaunchFor<float>(a, stream);
      break;
    case DType::kBfloat16:
      LaunchFor<__nv_bfloat16>(a, stream);
      break;
    case DType::kFloat16:
      LaunchFor<__half>(a, stream);
      break;
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
