// The tensor-core flash attention's plan, shared by the CUDA kernel (flash_attention.cuh) and its
// CPU emulation (napi/cpu_kernel_check.cc, op "flash_attention"), so the emulation tiles, pads,
// splits and combines exactly as the kernel does. Plain C++ (no CUDA headers): the CPU build
// includes it too.
//
// One block owns BM = 16 * WM query rows of one (batch item, head) and a range of key tiles of BN
// keys (all of them, or one split's share: very long key ranges are split across blocks and the
// splits' partial results combined afterwards, flash-decoding style). Query/key width is padded to
// DQK and value width to DV with zeros, which changes no score and no output column, so odd widths
// (261, 322) run exactly on the m16n8k16 tensor-core tiles.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define PERCEIVER_HOST_DEVICE __host__ __device__
#else
#define PERCEIVER_HOST_DEVICE
#endif

namespace perceiver::cuda::flash {

// The instantiated shapes: X(DQK, DV, WM, WN, BN, KSPLIT).
//   DQK, DV  padded widths (DQK a multiple of 16 * KSPLIT, DV a multiple of 8 * WN)
//   WM       warps along the query rows (16 rows each): BM = 16 * WM
//   WN       warps along the value width: each owns DV / WN output columns, so a wide head's
//            output accumulator is spread over WN warps instead of spilling from one
//   BN       keys per tile
//   KSPLIT   query/key width split across the WN warps when scoring (wide heads: the score tile
//            has fewer 8-key columns than there are warps), partial scores summed in shared memory
// Rows: the language model (8 heads of 32 / 160, its decoder 32 / 96), 64- and 128-wide heads, and
// single wide heads of 261, 322, 512 and 1024. Shared memory stays under 131 KB, within an A100's
// opt-in 163 KB and an H100 / H200's 227 KB.
#define PERCEIVER_FLASH_CONFIGS(X) \
  X(32, 96, 4, 1, 64, 1)           \
  X(32, 160, 4, 1, 64, 1)          \
  X(64, 64, 4, 1, 64, 1)           \
  X(128, 128, 4, 2, 64, 1)         \
  X(272, 288, 2, 4, 64, 1)         \
  X(336, 352, 2, 4, 64, 1)         \
  X(512, 512, 2, 4, 32, 1)         \
  X(1024, 1024, 1, 8, 16, 4)

struct Config {
  int dqk, dv, wm, wn, bn, ksplit;
  constexpr int bm() const { return 16 * wm; }
  constexpr int threads() const { return 32 * wm * wn; }
  // Shared memory of one block, in bytes (the layout flash_attention.cuh carves out).
  constexpr size_t SharedBytes() const {
    return 2 * (static_cast<size_t>(bm()) * (dqk + 8) + static_cast<size_t>(bn) * (dqk + 8) + static_cast<size_t>(dv) * (bn + 8) +
                static_cast<size_t>(bm()) * (bn + 8)) +
           4 * (static_cast<size_t>(ksplit) * bm() * bn + 3 * static_cast<size_t>(bm()));
  }
};

#define PERCEIVER_FLASH_CONFIG_ENTRY(dqk, dv, wm, wn, bn, ksplit) Config{dqk, dv, wm, wn, bn, ksplit},
constexpr Config kConfigs[] = {PERCEIVER_FLASH_CONFIGS(PERCEIVER_FLASH_CONFIG_ENTRY)};
#undef PERCEIVER_FLASH_CONFIG_ENTRY
constexpr int kConfigCount = sizeof(kConfigs) / sizeof(kConfigs[0]);

// The config for real widths dqk and dv: the smallest padded shape that holds both, unless padding
// would more than half-fill the tile with zeros (then -1: the caller uses the exact float32 kernel).
inline int FindConfig(int64_t dqk, int64_t dv) {
  int best = -1;
  for (int i = 0; i < kConfigCount; ++i) {
    const Config& c = kConfigs[i];
    if (dqk > c.dqk || dv > c.dv || 2 * dqk < c.dqk || 2 * dv < c.dv) continue;
    if (best < 0 || static_cast<int64_t>(c.dqk) + c.dv < static_cast<int64_t>(kConfigs[best].dqk) + kConfigs[best].dv) best = i;
  }
  return best;
}

// How the key tiles are shared among splits: split s takes tiles [s * tiles_per_split,
// min(tiles, (s + 1) * tiles_per_split)) of the batch item's valid keys (an item with fewer valid
// keys may leave a split empty; the combine step weighs an empty split by zero).
struct SplitPlan {
  int splits = 1;
  int64_t tiles_per_split = 0;
};

// Splits only when the unsplit grid would leave most of the GPU idle: then enough splits for about
// two blocks per multiprocessor, each split at least 8 key tiles long. force > 0 asks for that many
// (the kernel checks use it to test the combine on short key ranges).
inline SplitPlan PlanSplits(int64_t nk, int bn, int64_t blocks, int multiprocessors, int force) {
  SplitPlan plan;
  const int64_t tiles = std::max<int64_t>(1, (nk + bn - 1) / bn);
  int64_t want = 1;
  if (force > 0) {
    want = force;
  } else if (blocks < multiprocessors) {
    want = std::min<int64_t>((2 * static_cast<int64_t>(multiprocessors) + blocks - 1) / blocks, tiles / 8);
  }
  want = std::max<int64_t>(1, std::min<int64_t>({want, tiles, 256}));
  plan.tiles_per_split = (tiles + want - 1) / want;
  plan.splits = static_cast<int>((tiles + plan.tiles_per_split - 1) / plan.tiles_per_split);
  return plan;
}

// Online softmax across key tiles: the factor a row's running output and sum are scaled by when
// its running maximum moves from m_old to m_new (-FLT_MAX: no valid key seen yet). The double
// overloads serve the CPU emulation's exact mode.
PERCEIVER_HOST_DEVICE inline float RescaleFactor(float m_old, float m_new) { return m_old > -FLT_MAX ? expf(m_old - m_new) : 0.0f; }
inline double RescaleFactor(double m_old, double m_new) { return m_old > -FLT_MAX ? std::exp(m_old - m_new) : 0.0; }

// The combine step for one output row: each split s left an unnormalised output o_s, its maximum
// m_s and sum l_s (m at ml[2 * s * ml_stride], l next to it); the row is sum_s w_s o_s / sum_s w_s l_s
// with w_s = exp(m_s - max_s m_s). Returns max_s m_s.
template <typename Real>
PERCEIVER_HOST_DEVICE inline Real CombineMax(const Real* ml, int splits, int64_t ml_stride) {
  Real m = -FLT_MAX;
  for (int s = 0; s < splits; ++s) m = ml[2 * s * ml_stride] > m ? ml[2 * s * ml_stride] : m;
  return m;
}
template <typename Real>
PERCEIVER_HOST_DEVICE inline Real CombineWeight(Real m_split, Real m_max) {
  return RescaleFactor(m_split, m_max);
}

// Everything one launch reads. Strides are in elements; head h of a row starts h * dqk (q, k) or
// h * dv (v, out) elements in. key_lengths ([batch], int32) or key_mask ([batch, nk], 1 = attend)
// are in device memory, or null.
struct Params {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t q_batch_stride = 0, q_row_stride = 0;
  int64_t k_batch_stride = 0, k_row_stride = 0;
  int64_t v_batch_stride = 0, v_row_stride = 0;
  float* out = nullptr;
  int64_t out_batch_stride = 0, out_row_stride = 0;
  const int32_t* key_lengths = nullptr;
  const uint8_t* key_mask = nullptr;
  int64_t batch = 0, heads = 0, nq = 0, nk = 0;
  int dqk = 0, dv = 0;
  float scale = 1.0f;
  int splits = 1;
  int64_t tiles_per_split = 0;
  // With splits > 1: [splits, batch, heads, nq, dv] unnormalised outputs, then
  // [splits, batch, heads, nq, 2] (maximum, sum) pairs.
  float* partial_out = nullptr;
  float* partial_ml = nullptr;
};

// Floats of workspace a split launch needs.
inline size_t WorkspaceFloats(int splits, int64_t batch, int64_t heads, int64_t nq, int64_t dv) {
  return splits > 1 ? static_cast<size_t>(splits) * static_cast<size_t>(batch * heads * nq) * static_cast<size_t>(dv + 2) : 0;
}

}  // namespace perceiver::cuda::flash
