// The attention weights themselves, for callers that ask for them (output_attentions): one block
// per (query, head, batch) computes its row of scaled scores, masks, and normalises it in place.
// The output itself still comes from the memory-efficient kernel.
#include <cfloat>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

namespace {

constexpr int kThreads = 256;

__device__ float BlockReduce(float v, bool is_max, float* shared) {
  for (int off = 16; off > 0; off /= 2) {
    const float other = __shfl_xor_sync(0xffffffffu, v, off);
    v = is_max ? fmaxf(v, other) : v + other;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < blockDim.x / 32 ? shared[lane] : (is_max ? -FLT_MAX : 0.0f);
    for (int off = 16; off > 0; off /= 2) {
      const float other = __shfl_xor_sync(0xffffffffu, v, off);
      v = is_max ? fmaxf(v, other) : v + other;
    }
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  const float result = shared[0];
  __syncthreads();
  return result;
}

__global__ void AttentionProbsKernel(AttentionArgs a) {
  __shared__ float shared[32];
  const int64_t qi = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t q_row = a.heads * a.dqk;
  const float* q = a.q + (b * a.nq + qi) * q_row + h * a.dqk;
  const uint8_t* mask = a.key_mask ? a.key_mask + b * a.nk : nullptr;
  float* row = a.probs + ((b * a.heads + h) * a.nq + qi) * a.nk;
  float local_max = -FLT_MAX;
  for (int64_t j = threadIdx.x; j < a.nk; j += blockDim.x) {
    const float* k = a.k + (b * a.nk + j) * q_row + h * a.dqk;
    float dot = 0.0f;
    for (int64_t c = 0; c < a.dqk; ++c) dot += q[c] * k[c];
    const float score = (!mask || mask[j]) ? dot * a.scale : -FLT_MAX;
    row[j] = score;
    local_max = fmaxf(local_max, score);
  }
  const float row_max = BlockReduce(local_max, true, shared);
  float local_sum = 0.0f;
  for (int64_t j = threadIdx.x; j < a.nk; j += blockDim.x) {
    const float e = (!mask || mask[j]) ? expf(row[j] - row_max) : 0.0f;
    row[j] = e;
    local_sum += e;
  }
  const float inv = 1.0f / BlockReduce(local_sum, false, shared);
  for (int64_t j = threadIdx.x; j < a.nk; j += blockDim.x) row[j] *= inv;
}

}  // namespace

void LaunchAttentionProbs(const AttentionArgs& a, cudaStream_t stream) {
  if (a.batch == 0 || a.nq == 0) return;
  if (a.nq > 0x7fffffff || a.heads > 65535 || a.batch > 65535) ThrowInvalidArgument("attention weights", "at most 2^31 - 1 queries and 65535 heads and batch items",
                         std::to_string(a.nq) + " queries, " + std::to_string(a.heads) + " heads, " + std::to_string(a.batch) + " items");
  const dim3 grid(static_cast<unsigned>(a.nq), static_cast<unsigned>(a.heads), static_cast<unsigned>(a.batch));
  AttentionProbsKernel<<<grid, kThreads, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
