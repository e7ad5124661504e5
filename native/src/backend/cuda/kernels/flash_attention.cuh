// Flash attention on tensor cores (mma.sync m16n8k16, bf16 or fp16 operands, float32
// accumulation): the kernel template. flash_attention.cu holds the launcher and the combine step;
// flash_attention_bf16.cu / flash_attention_fp16.cu instantiate it for every shape of
// flash_attention_plan.h (one file per dtype, so nvcc compiles them in parallel).
//
// Per key tile of BN keys, a block of WM x WN warps:
//   1. stages K [BN, DQK] and V transposed [DV, BN] in shared memory, rounded to T and zero-padded
//      (Q [BM, DQK] was staged once);
//   2. scores S = Q K^T on tensor cores into a float tile in shared memory (warp (wm, wn) takes row
//      tile wm and every (WN / KSPLIT)-th 8-key column tile over a 1 / KSPLIT share of the width);
//   3. online softmax, a warp per row: running maximum and sum, P = exp(scale S - max) rounded to T
//      in shared memory, the factor the row's output is rescaled by;
//   4. O += P V on tensor cores, warp (wm, wn) owning rows wm and columns [wn DV / WN, +DV / WN) in
//      registers, so a wide head's accumulator is spread over WN warps.
// Scores and probabilities live only in shared memory. The block writes O / l, or with splits its
// unnormalised O and (max, sum) for the combine step.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with .bf16 / .f16 operands; g = lane / 4, t = lane % 4):
//   A (16 x 16, row-major): a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9]
//   B (16 x 8, "col": B[k][n] pairs along k): b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]
//   C (16 x 8, float): c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1]
// B of Q K^T is K^T, so B[k = d][n = key] = K[key][d]: pairs along d, contiguous in a row of K.
// B of P V is V, so B[k = key][n = c] = Vt[c][key]: contiguous in a row of the transposed V tile.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cfloat>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/flash_attention_plan.h"

namespace perceiver::cuda::flash {

template <typename T>
struct Mma;

template <>
struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ __nv_bfloat16 From(float x) { return __float2bfloat16_rn(x); }
  static __device__ __forceinline__ float To(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ void Run(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};

template <>
struct Mma<__half> {
  static __device__ __forceinline__ __half From(float x) { return __float2half_rn(x); }
  static __device__ __forceinline__ float To(__half x) { return __half2float(x); }
  static __device__ __forceinline__ void Run(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};

// Two adjacent 16-bit elements as one 32-bit register (the element at the lower address in the low half).
template <typename T>
__device__ __forceinline__ uint32_t Pair(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// The A fragment of the 16 x 16 block of a row-major tile at `tile` (ld elements per row).
template <typename T>
__device__ __forceinline__ void LoadA(uint32_t a[4], const T* tile, int ld, int g, int t) {
  const T* p = tile + g * ld + 2 * t;
  a[0] = Pair(p);
  a[1] = Pair(p + 8 * ld);
  a[2] = Pair(p + 8);
  a[3] = Pair(p + 8 * ld + 8);
}

// The B fragment of a 16 (k) x 8 (n) block stored n-major: element (k, n) at tile[n * ld + k].
template <typename T>
__device__ __forceinline__ void LoadB(uint32_t b[2], const T* tile, int ld, int g, int t) {
  const T* p = tile + g * ld + 2 * t;
  b[0] = Pair(p);
  b[1] = Pair(p + 8);
}

template <typename T, int DQK, int DV, int WM, int WN, int BN, int KSPLIT>
__global__ void __launch_bounds__(32 * WM * WN, 1) FlashAttentionKernel(const Params p) {
  constexpr int BM = 16 * WM;
  constexpr int kWarps = WM * WN;
  constexpr int kThreads = 32 * kWarps;
  constexpr int LDQ = DQK + 8;  // +8 elements: rows 16 bytes apart mod 128, fewer bank conflicts
  constexpr int LDK = DQK + 8;
  constexpr int LDV = BN + 8;
  constexpr int LDP = BN + 8;
  constexpr int kKeySteps = DQK / 16;           // 16-wide steps over the query/key width
  constexpr int kStepsPerPart = kKeySteps / KSPLIT;
  constexpr int kColumnGroups = WN / KSPLIT;    // warps sharing a width part split the 8-key column tiles
  constexpr int kKeyTiles8 = BN / 8;
  constexpr int kScoreTiles = (kKeyTiles8 + kColumnGroups - 1) / kColumnGroups;
  constexpr int kOutWidth = DV / WN;            // output columns per warp
  constexpr int kOutTiles = kOutWidth / 8;
  static_assert(DQK % (16 * KSPLIT) == 0, "DQK must split into 16-wide steps evenly");
  static_assert(WN % KSPLIT == 0, "KSPLIT must divide WN");
  static_assert(DV % (8 * WN) == 0, "DV must split into 8-wide tiles evenly");
  static_assert(BN % 16 == 0 && BN <= 64, "BN: a multiple of 16, at most 64 (two keys per lane in the softmax)");

  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* qs = reinterpret_cast<T*>(shared_raw);       // [BM, LDQ]
  T* ks = qs + BM * LDQ;                          // [BN, LDK]
  T* vt = ks + BN * LDK;                          // [DV, LDV]: V transposed
  T* ps = vt + DV * LDV;                          // [BM, LDP]
  float* ss = reinterpret_cast<float*>(ps + BM * LDP);  // [KSPLIT, BM, BN] partial scores
  float* row_max = ss + KSPLIT * BM * BN;         // [BM]
  float* row_sum = row_max + BM;                  // [BM]
  float* row_scale = row_sum + BM;                // [BM]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wm = warp % WM, wn = warp / WM;
  const int split = static_cast<int>(blockIdx.x % static_cast<unsigned>(p.splits));
  const int64_t q0 = static_cast<int64_t>(blockIdx.x / static_cast<unsigned>(p.splits)) * BM;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int rows = static_cast<int>(min(static_cast<int64_t>(BM), p.nq - q0));
  const int dqk = p.dqk, dv = p.dv;

  const float* qg = p.q + b * p.q_batch_stride + q0 * p.q_row_stride + h * dqk;
  const float* kg = p.k + b * p.k_batch_stride + h * dqk;
  const float* vg = p.v + b * p.v_batch_stride + h * dv;
  const int64_t valid_keys = p.key_lengths ? min(p.nk, static_cast<int64_t>(p.key_lengths[b])) : p.nk;
  const uint8_t* mask = p.key_mask ? p.key_mask + b * p.nk : nullptr;
  const int64_t tiles = (valid_keys + BN - 1) / BN;
  const int64_t tile_begin = split * p.tiles_per_split;
  const int64_t tile_end = min(tiles, tile_begin + p.tiles_per_split);

  for (int i = tid; i < BM * DQK; i += kThreads) {
    const int r = i / DQK, c = i % DQK;
    qs[r * LDQ + c] = Mma<T>::From(r < rows && c < dqk ? qg[r * p.q_row_stride + c] : 0.0f);
  }
  for (int r = tid; r < BM; r += kThreads) {
    row_max[r] = -FLT_MAX;
    row_sum[r] = 0.0f;
  }
  float o[kOutTiles][4];
#pragma unroll
  for (int n = 0; n < kOutTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    const int64_t k0 = tile * BN;
    const int keys = static_cast<int>(min(static_cast<int64_t>(BN), valid_keys - k0));
    // 1. K and V^T of this tile (zero beyond the valid keys and the real widths).
    for (int i = tid; i < BN * DQK; i += kThreads) {
      const int j = i / DQK, c = i % DQK;
      ks[j * LDK + c] = Mma<T>::From(j < keys && c < dqk ? kg[(k0 + j) * p.k_row_stride + c] : 0.0f);
    }
    for (int i = tid; i < BN * DV; i += kThreads) {
      const int j = i / DV, c = i % DV;
      vt[c * LDV + j] = Mma<T>::From(j < keys && c < dv ? vg[(k0 + j) * p.v_row_stride + c] : 0.0f);
    }
    __syncthreads();

    // 2. Scores: row tile wm, column tiles column_group + i * kColumnGroups, width part `part`.
    {
      const int part = wn % KSPLIT, column_group = wn / KSPLIT;
      float s[kScoreTiles][4];
#pragma unroll
      for (int i = 0; i < kScoreTiles; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll 4
      for (int step = part * kStepsPerPart; step < (part + 1) * kStepsPerPart; ++step) {
        uint32_t a[4];
        LoadA(a, qs + wm * 16 * LDQ + step * 16, LDQ, g, t);
#pragma unroll
        for (int i = 0; i < kScoreTiles; ++i) {
          const int n8 = column_group + i * kColumnGroups;
          if (n8 < kKeyTiles8) {
            uint32_t bf[2];
            LoadB(bf, ks + n8 * 8 * LDK + step * 16, LDK, g, t);
            Mma<T>::Run(s[i], a, bf);
          }
        }
      }
      float* sp = ss + part * BM * BN + (wm * 16 + g) * BN + 2 * t;
#pragma unroll
      for (int i = 0; i < kScoreTiles; ++i) {
        const int n8 = column_group + i * kColumnGroups;
        if (n8 < kKeyTiles8) {
          sp[n8 * 8] = s[i][0];
          sp[n8 * 8 + 1] = s[i][1];
          sp[8 * BN + n8 * 8] = s[i][2];
          sp[8 * BN + n8 * 8 + 1] = s[i][3];
        }
      }
    }
    __syncthreads();

    // 3. Online softmax, a warp per row; each lane takes keys lane and lane + 32.
    for (int r = warp; r < BM; r += kWarps) {
      float score[2];
      bool valid[2];
      float tile_max = -FLT_MAX;
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const int j = lane + 32 * u;
        float sum = 0.0f;
        if (j < BN) {
#pragma unroll
          for (int part = 0; part < KSPLIT; ++part) sum += ss[part * BM * BN + r * BN + j];
        }
        score[u] = sum * p.scale;
        valid[u] = j < keys && (mask == nullptr || mask[k0 + j] != 0);
        if (valid[u]) tile_max = fmaxf(tile_max, score[u]);
      }
      for (int off = 16; off > 0; off /= 2) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, off));
      const float old_max = row_max[r];
      const float new_max = fmaxf(old_max, tile_max);
      float sum = 0.0f;
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const int j = lane + 32 * u;
        if (j < BN) {
          // The rounded probability is both summed and multiplied, so the row's weights sum to one.
          const T prob = Mma<T>::From(valid[u] && new_max > -FLT_MAX ? expf(score[u] - new_max) : 0.0f);
          ps[r * LDP + j] = prob;
          sum += Mma<T>::To(prob);
        }
      }
      for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      if (lane == 0) {
        const float factor = RescaleFactor(old_max, new_max);
        row_scale[r] = factor;
        row_sum[r] = row_sum[r] * factor + sum;
        row_max[r] = new_max;
      }
    }
    __syncthreads();

    // 4. O = O * factor + P V over this warp's rows and columns.
    {
      const float f_lo = row_scale[wm * 16 + g], f_hi = row_scale[wm * 16 + g + 8];
#pragma unroll
      for (int n = 0; n < kOutTiles; ++n) {
        o[n][0] *= f_lo;
        o[n][1] *= f_lo;
        o[n][2] *= f_hi;
        o[n][3] *= f_hi;
      }
#pragma unroll
      for (int step = 0; step < BN / 16; ++step) {
        uint32_t a[4];
        LoadA(a, ps + wm * 16 * LDP + step * 16, LDP, g, t);
#pragma unroll
        for (int n = 0; n < kOutTiles; ++n) {
          uint32_t bf[2];
          LoadB(bf, vt + (wn * kOutWidth + n * 8) * LDV + step * 16, LDV, g, t);
          Mma<T>::Run(o[n], a, bf);
        }
      }
    }
    __syncthreads();  // the next tile overwrites K, V^T, P and the row factors
  }
  __syncthreads();  // a split without tiles reads the row state its initialisers wrote

  // Rows g and g + 8 of the warp's row tile; columns 2t, 2t + 1 of each 8-wide output tile.
  const int r_lo = wm * 16 + g, r_hi = r_lo + 8;
  if (p.splits == 1) {
    const float l_lo = row_sum[r_lo], l_hi = row_sum[r_hi];
    const float inv_lo = l_lo > 0.0f ? 1.0f / l_lo : 0.0f, inv_hi = l_hi > 0.0f ? 1.0f / l_hi : 0.0f;
    float* out = p.out + b * p.out_batch_stride + q0 * p.out_row_stride + h * dv;
#pragma unroll
    for (int n = 0; n < kOutTiles; ++n) {
      const int c = wn * kOutWidth + n * 8 + 2 * t;
      if (r_lo < rows) {
        if (c < dv) out[r_lo * p.out_row_stride + c] = o[n][0] * inv_lo;
        if (c + 1 < dv) out[r_lo * p.out_row_stride + c + 1] = o[n][1] * inv_lo;
      }
      if (r_hi < rows) {
        if (c < dv) out[r_hi * p.out_row_stride + c] = o[n][2] * inv_hi;
        if (c + 1 < dv) out[r_hi * p.out_row_stride + c + 1] = o[n][3] * inv_hi;
      }
    }
    return;
  }
  // A split's share: unnormalised output rows and their (max, sum), for the combine step.
  const int64_t row0 = ((static_cast<int64_t>(split) * p.batch + b) * p.heads + h) * p.nq + q0;
  float* po = p.partial_out + row0 * dv;
#pragma unroll
  for (int n = 0; n < kOutTiles; ++n) {
    const int c = wn * kOutWidth + n * 8 + 2 * t;
    if (r_lo < rows) {
      if (c < dv) po[r_lo * dv + c] = o[n][0];
      if (c + 1 < dv) po[r_lo * dv + c + 1] = o[n][1];
    }
    if (r_hi < rows) {
      if (c < dv) po[r_hi * dv + c] = o[n][2];
      if (c + 1 < dv) po[r_hi * dv + c + 1] = o[n][3];
    }
  }
  for (int r = tid; r < rows; r += kThreads) {
    p.partial_ml[2 * (row0 + r)] = row_max[r];
    p.partial_ml[2 * (row0 + r) + 1] = row_sum[r];
  }
}

// Launches one instantiation on `stream` (grid and shared memory sized by the launcher).
template <typename T, int DQK, int DV, int WM, int WN, int BN, int KSPLIT>
void LaunchKernel(const Params& p, dim3 grid, size_t shared_bytes, cudaStream_t stream) {
  auto* kernel = &FlashAttentionKernel<T, DQK, DV, WM, WN, BN, KSPLIT>;
  // Once per device and instantiation: blocks above 48 KB of shared memory must be allowed
  // explicitly (two threads racing here both set the same value).
  static std::atomic<unsigned long long> configured{0};  // bit d: done on device d < 64
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const unsigned long long bit = device < 64 ? 1ull << device : 0;
  if (bit == 0 || !(configured.load(std::memory_order_relaxed) & bit)) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes)));
    configured.fetch_or(bit, std::memory_order_relaxed);
  }
  kernel<<<grid, 32 * WM * WN, shared_bytes, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda::flash

// One instantiation per shape of PERCEIVER_FLASH_CONFIGS for dtype T (used inside namespace
// perceiver::cuda::flash by the two dtype files).
#define PERCEIVER_FLASH_INSTANTIATE(T, dqk, dv, wm, wn, bn, ksplit) \
  template void LaunchKernel<T, dqk, dv, wm, wn, bn, ksplit>(const Params&, dim3, size_t, cudaStream_t);
