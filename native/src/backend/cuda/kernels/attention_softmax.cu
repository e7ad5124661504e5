// The two small kernels of the GEMM attention (backend/cuda/gemm_attention.cc): an online-softmax
// step over one chunk of keys, and the per-row rescale of the output accumulator. The products
// themselves run in cuBLAS on tensor cores; these kernels only touch one chunk of scores.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // one warp per row

__device__ inline void StoreProb(float* p, int64_t i, float v) { p[i] = v; }
__device__ inline void StoreProb(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }
__device__ inline void StoreProb(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }

// Row r of the chunk (entry r / rows, query r % rows) has `keys` scores at scores + r * ld, already
// scaled. Updates the row's running max m and sum l, writes exp(s - m) (or, when `normalize`,
// the final softmax of a single-chunk row) to probs, and the factor the accumulator must be
// multiplied by to corr. Masked keys get weight 0; a row with no valid key so far keeps m = -inf.
template <typename P>
__global__ void OnlineSoftmaxChunkKernel(const float* scores, P* probs, int64_t ld, int64_t total_rows, int64_t rows, int keys,
                                         const uint8_t* mask, int64_t mask_entry_stride, float* m, float* l, float* corr,
                                         bool first, bool normalize) {
  const int lane = threadIdx.x % 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (r >= total_rows) return;
  const float* s = scores + r * ld;
  P* p = probs + r * ld;
  const uint8_t* row_mask = mask ? mask + (r / rows) * mask_entry_stride : nullptr;
  float chunk_max = -INFINITY;
  for (int j = lane; j < keys; j += 32) {
    if (!row_mask || row_mask[j]) chunk_max = fmaxf(chunk_max, s[j]);
  }
  for (int off = 16; off > 0; off /= 2) chunk_max = fmaxf(chunk_max, __shfl_xor_sync(0xffffffffu, chunk_max, off));
  const float old_max = first ? -INFINITY : m[r];
  const float new_max = fmaxf(old_max, chunk_max);
  float sum = 0.0f;
  for (int j = lane; j < keys; j += 32) {
    const bool valid = (!row_mask || row_mask[j]) && new_max > -INFINITY;
    const float e = valid ? expf(s[j] - new_max) : 0.0f;
    sum += e;
    if (!normalize) StoreProb(p, j, e);
  }
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (normalize) {  // the whole row is in this chunk: write the softmax itself
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int j = lane; j < keys; j += 32) {
      const bool valid = (!row_mask || row_mask[j]) && new_max > -INFINITY;
      StoreProb(p, j, valid ? expf(s[j] - new_max) * inv : 0.0f);
    }
    return;
  }
  if (lane == 0) {
    const float c = old_max > -INFINITY ? expf(old_max - new_max) : 0.0f;
    corr[r] = c;
    l[r] = (first ? 0.0f : l[r] * c) + sum;
    m[r] = new_max;
  }
}

// out row (entry e = r / rows, query q = r % rows) at out + e * entry_stride + q * row_stride,
// `cols` values: multiplied by factor[r], or divided by it when `divide` (0 where it is 0).
__global__ void RescaleRowsKernel(float* out, int64_t total_rows, int64_t rows, int64_t entry_stride, int64_t row_stride, int64_t cols,
                                  const float* factor, bool divide) {
  const int64_t r = blockIdx.x;
  if (r >= total_rows) return;
  float* row = out + (r / rows) * entry_stride + (r % rows) * row_stride;
  const float f = factor[r];
  const float g = divide ? (f > 0.0f ? 1.0f / f : 0.0f) : f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) row[c] *= g;
}

}  // namespace

void LaunchOnlineSoftmaxChunk(const float* scores, void* probs, ProbsType probs_type, int64_t ld, int64_t entries, int64_t rows,
                              int keys, const uint8_t* mask, int64_t mask_entry_stride, float* m, float* l, float* corr, bool first,
                              bool normalize, cudaStream_t stream) {
  const int64_t total = entries * rows;
  if (total == 0) return;
  const unsigned grid = static_cast<unsigned>((total + kRowsPerBlock - 1) / kRowsPerBlock);
  const int threads = 32 * kRowsPerBlock;
  switch (probs_type) {
    case ProbsType::kFloat32:
      OnlineSoftmaxChunkKernel<float><<<grid, threads, 0, stream>>>(scores, static_cast<float*>(probs), ld, total, rows, keys, mask,
                                                                  mask_entry_stride, m, l, corr, first, normalize);
      break;
    case ProbsType::kFloat16:
      OnlineSoftmaxChunkKernel<__half><<<grid, threads, 0, stream>>>(scores, static_cast<__half*>(probs), ld, total, rows, keys, mask,
                                                                   mask_entry_stride, m, l, corr, first, normalize);
      break;
    case ProbsType::kBfloat16:
      OnlineSoftmaxChunkKernel<__nv_bfloat16><<<grid, threads, 0, stream>>>(scores, static_cast<__nv_bfloat16*>(probs), ld, total, rows,
                                                                          keys, mask, mask_entry_stride, m, l, corr, first, normalize);
      break;
  }
  CUDA_CHECK_LAUNCH();
}

void LaunchRescaleRows(float* out, int64_t entries, int64_t rows, int64_t entry_stride, int64_t row_stride, int64_t cols,
                       const float* factor, bool divide, cudaStream_t stream) {
  const int64_t total = entries * rows;
  if (total == 0 || cols == 0) return;
  if (total > INT32_MAX) ThrowInvalidArgument("attention rows", "at most 2^31 - 1 rows in one chunk", std::to_string(total));
  const int threads = cols >= 256 ? 256 : (cols >= 128 ? 128 : 64);
  RescaleRowsKernel<<<static_cast<unsigned>(total), threads, 0, stream>>>(out, total, rows, entry_stride, row_stride, cols, factor, divide);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
