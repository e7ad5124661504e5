// Memory-efficient multi-head attention (flash-attention style): each block owns a tile of
// queries of one (batch, head) and streams the keys and values through shared memory a block at a
// time, keeping a running row maximum and sum (online softmax), so the queries x keys score matrix
// never exists in global memory. Query/key width and value width are independent and arbitrary
// (32 / 160 in the language model, single heads of 261, 322, 512 or 1024), and a key mask removes
// padded keys. Accumulation is float32.
#include <cfloat>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kKeys = 64;         // keys per streamed block
constexpr int kQkChunk = 32;      // query/key channels per shared-memory pass
constexpr int kVChunk = 64;       // value channels per shared-memory pass

struct AttentionParams {
  const float* q;
  const float* k;
  const float* v;
  const uint8_t* key_mask;
  float* out;
  int64_t nq, nk, heads, dqk, dv;
  float scale;
};

size_t SharedFloats(int bq, int64_t dv) {
  return static_cast<size_t>(bq) * kQkChunk + static_cast<size_t>(kKeys) * (kQkChunk + 1) + static_cast<size_t>(bq) * kKeys +
         static_cast<size_t>(kKeys) * kVChunk + static_cast<size_t>(bq) * dv + 3 * static_cast<size_t>(bq);
}

__global__ void FlashAttentionKernel(AttentionParams p, int bq) {
  extern __shared__ float smem[];
  float* qc = smem;
  float* kc = qc + bq * kQkChunk;
  float* s = kc + kKeys * (kQkChunk + 1);
  float* vc = s + bq * kKeys;
  float* o = vc + kKeys * kVChunk;
  float* m = o + bq * p.dv;
  float* l = m + bq;
  float* corr = l + bq;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, warps = blockDim.x / 32;
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = static_cast<int64_t>(blockIdx.x) * bq;
  const int rows = static_cast<int>(min(static_cast<int64_t>(bq), p.nq - q0));
  const int64_t q_row = p.heads * p.dqk, v_row = p.heads * p.dv;
  const float* q = p.q + (b * p.nq + q0) * q_row + h * p.dqk;
  const float* kb = p.k + b * p.nk * q_row + h * p.dqk;
  const float* vb = p.v + b * p.nk * v_row + h * p.dv;
  const uint8_t* mask = p.key_mask ? p.key_mask + b * p.nk : nullptr;

  for (int64_t i = tid; i < static_cast<int64_t>(bq) * p.dv; i += blockDim.x) o[i] = 0.0f;
  for (int r = tid; r < bq; r += blockDim.x) {
    m[r] = -FLT_MAX;
    l[r] = 0.0f;
  }
  __syncthreads();

  for (int64_t k0 = 0; k0 < p.nk; k0 += kKeys) {
    const int keys = static_cast<int>(min(static_cast<int64_t>(kKeys), p.nk - k0));
    // Scores of this key block, accumulated over chunks of the query/key channels.
    for (int i = tid; i < bq * kKeys; i += blockDim.x) s[i] = 0.0f;
    for (int64_t d0 = 0; d0 < p.dqk; d0 += kQkChunk) {
      const int dc = static_cast<int>(min(static_cast<int64_t>(kQkChunk), p.dqk - d0));
      for (int i = tid; i < bq * kQkChunk; i += blockDim.x) {
        const int r = i / kQkChunk, c = i % kQkChunk;
        qc[i] = (r < rows && c < dc) ? q[r * q_row + d0 + c] : 0.0f;
      }
      for (int i = tid; i < kKeys * kQkChunk; i += blockDim.x) {
        const int j = i / kQkChunk, c = i % kQkChunk;
        kc[j * (kQkChunk + 1) + c] = (j < keys && c < dc) ? kb[(k0 + j) * q_row + d0 + c] : 0.0f;
      }
      __syncthreads();
      for (int i = tid; i < bq * kKeys; i += blockDim.x) {
        const int r = i / kKeys, j = i % kKeys;
        float acc = 0.0f;
#pragma unroll 8
        for (int c = 0; c < kQkChunk; ++c) acc += qc[r * kQkChunk + c] * kc[j * (kQkChunk + 1) + c];
        s[i] += acc;
      }
      __syncthreads();
    }
    // Online softmax: one warp per row.
    for (int r = warp; r < bq; r += warps) {
      float* sr = s + r * kKeys;
      float block_max = -FLT_MAX;
      for (int j = lane; j < keys; j += 32) {
        if (!mask || mask[k0 + j]) block_max = fmaxf(block_max, sr[j] * p.scale);
      }
      for (int off = 16; off > 0; off /= 2) block_max = fmaxf(block_max, __shfl_xor_sync(0xffffffffu, block_max, off));
      const float new_max = fmaxf(m[r], block_max);
      float sum = 0.0f;
      for (int j = lane; j < kKeys; j += 32) {
        const bool valid = j < keys && (!mask || mask[k0 + j]) && new_max > -FLT_MAX;
        const float e = valid ? expf(sr[j] * p.scale - new_max) : 0.0f;
        sr[j] = e;
        sum += e;
      }
      for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      if (lane == 0) {
        const float c = m[r] > -FLT_MAX ? expf(m[r] - new_max) : 0.0f;
        corr[r] = c;
        l[r] = l[r] * c + sum;
        m[r] = new_max;
      }
    }
    __syncthreads();
    // o = o * correction + p @ v, a chunk of value channels at a time.
    for (int64_t v0 = 0; v0 < p.dv; v0 += kVChunk) {
      const int vcn = static_cast<int>(min(static_cast<int64_t>(kVChunk), p.dv - v0));
      for (int i = tid; i < kKeys * kVChunk; i += blockDim.x) {
        const int j = i / kVChunk, c = i % kVChunk;
        vc[i] = (j < keys && c < vcn) ? vb[(k0 + j) * v_row + v0 + c] : 0.0f;
      }
      __syncthreads();
      for (int i = tid; i < bq * kVChunk; i += blockDim.x) {
        const int r = i / kVChunk, c = i % kVChunk;
        if (c >= vcn) continue;
        float acc = 0.0f;
#pragma unroll 8
        for (int j = 0; j < kKeys; ++j) acc += s[r * kKeys + j] * vc[j * kVChunk + c];
        float* cell = o + r * p.dv + v0 + c;
        *cell = *cell * corr[r] + acc;
      }
      __syncthreads();
    }
  }
  for (int64_t i = tid; i < static_cast<int64_t>(rows) * p.dv; i += blockDim.x) {
    const int64_t r = i / p.dv, c = i % p.dv;
    p.out[(b * p.nq + q0 + r) * v_row + h * p.dv + c] = o[i] / l[r];
  }
}

}  // namespace

int PrepareAttention() {
  int device = 0, max_shared = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  CUDA_CHECK(cudaFuncSetAttribute(FlashAttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_shared));
  return max_shared;
}

void LaunchAttention(const AttentionArgs& a, int max_shared, cudaStream_t stream) {
  if (a.batch == 0 || a.nq == 0) return;
  if (a.heads > 65535 || a.batch > 65535) ThrowInvalidArgument("attention heads, batch", "at most 65535 heads and batch items on the GPU", std::to_string(a.heads) + " heads, " + std::to_string(a.batch) + " items");
  // The query tile shrinks for very wide values so the output accumulator fits in shared memory.
  int bq = 16;
  while (bq > 1 && SharedFloats(bq, a.dv) * sizeof(float) > static_cast<size_t>(max_shared)) bq /= 2;
  const size_t bytes = SharedFloats(bq, a.dv) * sizeof(float);
  if (bytes > static_cast<size_t>(max_shared)) {
    ThrowInvalidArgument("attention value width", "a width that fits this GPU's shared memory", std::to_string(a.dv));
  }
  AttentionParams p{a.q, a.k, a.v, a.key_mask, a.out, a.nq, a.nk, a.heads, a.dqk, a.dv, a.scale};
  const dim3 grid(static_cast<unsigned>((a.nq + bq - 1) / bq), static_cast<unsigned>(a.heads), static_cast<unsigned>(a.batch));
  FlashAttentionKernel<<<grid, kThreads, bytes, stream>>>(p, bq);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
