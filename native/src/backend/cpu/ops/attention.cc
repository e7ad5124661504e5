// Multi-head scaled dot-product attention on the CPU.
//
// Products go through cpu::Gemm strided straight out of the projection layout (views of [rows, heads *
// width] blocks, possibly columns of one fused QKV buffer), so heads need no transpose copy. Key
// padding given as per-item lengths shortens each item's key range (no masked work at all). Without requested weights the softmax is computed online over
// blocks of keys (flash-attention style), so memory stays bounded for any number of keys.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/kernels/gemm.h"
#include "backend/cpu/kernels/kernel_set.h"
#include "backend/cpu/kernels/rows.h"
#include "backend/cpu/ops/cpu_ops.h"
#include "core/simd_math.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

namespace {

// Softmax of scale * scores over each row, skipping keys whose mask is 0 (their weight is exactly
// zero, which is what adding transformers' finfo.min bias produces after exp underflows).
void SoftmaxRow(float* s, int64_t nk, float scale, const uint8_t* key_mask) {
  if (key_mask != nullptr) {
    float max_v = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < nk; ++j) {
      if (key_mask[j]) max_v = std::max(max_v, s[j] * scale);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < nk; ++j) {
      s[j] = key_mask[j] ? simd::Exp(s[j] * scale - max_v) : 0.0f;
      sum += s[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < nk; ++j) s[j] *= inv;
    return;
  }
  int64_t j = 0;
  float max_v = -std::numeric_limits<float>::infinity();
#if defined(__SSE2__)
  const __m128 sc = _mm_set1_ps(scale);
  __m128 mv = _mm_set1_ps(max_v);
  for (; j + 4 <= nk; j += 4) mv = _mm_max_ps(mv, _mm_mul_ps(_mm_loadu_ps(s + j), sc));
  max_v = simd::HorizontalMax(mv);
#endif
  for (; j < nk; ++j) max_v = std::max(max_v, s[j] * scale);
  j = 0;
  float sum = 0.0f;
#if defined(__SSE2__)
  const __m128 m = _mm_set1_ps(max_v);
  __m128 acc = _mm_setzero_ps();
  for (; j + 4 <= nk; j += 4) {
    const __m128 e = simd::Exp(_mm_sub_ps(_mm_mul_ps(_mm_loadu_ps(s + j), sc), m));
    _mm_storeu_ps(s + j, e);
    acc = _mm_add_ps(acc, e);
  }
  sum = simd::HorizontalSum(acc);
#endif
  for (; j < nk; ++j) {
    s[j] = simd::Exp(s[j] * scale - max_v);
    sum += s[j];
  }
  const float inv = 1.0f / sum;
  for (j = 0; j < nk; ++j) s[j] *= inv;
}

}  // namespace

namespace {

// Attention weights requested: each row's full score vector is needed anyway, so the scores of a
// block of queries are computed whole, normalised in place (they are the returned weights) and
// multiplied by V.
void AttentionWithWeights(const AttentionOp& a, const uint8_t* key_mask) {
  const int64_t v_row = a.heads * a.dv;
  const int64_t rows_per_block = std::min<int64_t>(a.nq, 64);
  const int64_t q_blocks = (a.nq + rows_per_block - 1) / rows_per_block;
  ThreadPool::Global().ParallelFor(a.batch * a.heads * q_blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t qb = t % q_blocks, h = (t / q_blocks) % a.heads, b = t / (q_blocks * a.heads);
      const int64_t q0 = qb * rows_per_block, rows = std::min(rows_per_block, a.nq - q0);
      const uint8_t* mask = key_mask ? key_mask + b * a.nk : nullptr;
      float* scores = a.probs + ((b * a.heads + h) * a.nq + q0) * a.nk;
      const float* q = a.q.data + b * a.q.batch_stride + q0 * a.q.ld + h * a.dqk;
      const float* k = a.k.data + b * a.k.batch_stride + h * a.dqk;
      const float* v = a.v.data + b * a.v.batch_stride + h * a.dv;
      float* out = a.out + (b * a.nq + q0) * v_row + h * a.dv;
      Gemm(true, rows, a.nk, a.dqk, 1.0f, q, a.q.ld, k, a.k.ld, 0.0f, scores, a.nk);
      for (int64_t r = 0; r < rows; ++r) SoftmaxRow(scores + r * a.nk, a.nk, a.scale, mask);
      Gemm(false, rows, a.dv, a.nk, 1.0f, scores, a.nk, v, a.v.ld, 0.0f, out, v_row);
    }
  });
}

constexpr int64_t kQueryBlock = 512;
constexpr int64_t kKeyBlock = 2048;

// One block of queries against every key, a block of keys at a time, with the online softmax:
// the running row maximum m and sum l rescale what was accumulated when a later block raises the
// maximum. Scores never exist beyond [queries x kKeyBlock], whatever the number of keys, and the
// products keep shapes the kernels run near their peak (a few hundred rows).
void AttentionBlock(const AttentionOp& a, int64_t b, int64_t h, int64_t q0, int64_t rows, std::vector<float>& scores,
                    std::vector<float>& acc, std::vector<float>& m, std::vector<float>& l) {
  const int64_t v_row = a.heads * a.dv;
  const uint8_t* mask = a.key_mask ? a.key_mask + b * a.nk : nullptr;
  const int64_t nk = a.key_lengths ? a.key_lengths[b] : a.nk;
  const float* q = a.q.data + b * a.q.batch_stride + q0 * a.q.ld + h * a.dqk;
  std::fill(acc.begin(), acc.begin() + rows * a.dv, 0.0f);
  std::fill(m.begin(), m.begin() + rows, -std::numeric_limits<float>::infinity());
  std::fill(l.begin(), l.begin() + rows, 0.0f);
  for (int64_t k0 = 0; k0 < nk; k0 += kKeyBlock) {
    const int64_t keys = std::min(kKeyBlock, nk - k0);
    const uint8_t* kmask = mask ? mask + k0 : nullptr;
    if (kmask && std::none_of(kmask, kmask + keys, [](uint8_t x) { return x != 0; })) continue;
    const float* k = a.k.data + b * a.k.batch_stride + k0 * a.k.ld + h * a.dqk;
    const float* v = a.v.data + b * a.v.batch_stride + k0 * a.v.ld + h * a.dv;
    Gemm(true, rows, keys, a.dqk, a.scale, q, a.q.ld, k, a.k.ld, 0.0f, scores.data(), keys);
    for (int64_t r = 0; r < rows; ++r) {
      float* s = scores.data() + r * keys;
      // Without a mask the row kernels of rows.h (AVX-512 / AVX2, as the products) take the
      // block's maximum and exponentials: 4-wide SSE here cost about as much as the products.
      float block_max = -std::numeric_limits<float>::infinity();
      if (kmask) {
        for (int64_t j = 0; j < keys; ++j) {
          if (kmask[j]) block_max = std::max(block_max, s[j]);
        }
      } else {
        block_max = RowMax(s, keys);
      }
      const float new_max = std::max(m[r], block_max);
      const float correction = simd::Exp(m[r] - new_max);  // exp(-inf) = 0 on the first block
      float sum = 0.0f;
      if (kmask) {
        for (int64_t j = 0; j < keys; ++j) {
          s[j] = kmask[j] ? simd::Exp(s[j] - new_max) : 0.0f;
          sum += s[j];
        }
      } else {
        sum = ExpShiftSum(s, s, keys, new_max);
      }
      l[r] = l[r] * correction + sum;
      m[r] = new_max;
      if (correction != 1.0f) ScaleRow(acc.data() + r * a.dv, a.dv, correction);
    }
    Gemm(false, rows, a.dv, keys, 1.0f, scores.data(), keys, v, a.v.ld, 1.0f, acc.data(), a.dv);
  }
  float* out = a.out + (b * a.nq + q0) * v_row + h * a.dv;
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = 1.0f / l[r];
    const float* o = acc.data() + r * a.dv;
    float* dst = out + r * v_row;
    for (int64_t c = 0; c < a.dv; ++c) dst[c] = o[c] * inv;
  }
}

}  // namespace

void Attention(const AttentionOp& a) {
  if (a.probs != nullptr) {
    // Every weight is returned, padded keys' (zero) included: lengths become a mask here.
    std::vector<uint8_t> from_lengths;
    const uint8_t* mask = a.key_mask;
    if (a.key_lengths != nullptr) {
      from_lengths.assign(static_cast<size_t>(a.batch * a.nk), 0);
      for (int64_t b = 0; b < a.batch; ++b) std::fill_n(from_lengths.begin() + b * a.nk, a.key_lengths[b], uint8_t{1});
      mask = from_lengths.data();
    }
    AttentionWithWeights(a, mask);
    return;
  }
  // Work items are (batch, head, block of queries), so one head with many queries still uses
  // every thread: blocks of up to kQueryBlock rows, fewer when that would leave under 4 items per
  // thread (the vision encoder's single-head cross-attention, 512 queries over 50,176 pixels, ran
  // as one item on one thread), in whole row tiles of the products. Each query row's result does
  // not depend on its block.
  if (a.nq <= 0 || a.batch <= 0 || a.heads <= 0) return;  // nothing to attend from
  const int64_t groups = a.batch * a.heads;
  const int64_t wanted_blocks = std::max<int64_t>(1, (4 * ThreadPool::Global().size() + groups - 1) / groups);
  const int64_t tile = kernels::kMr;
  const int64_t balanced = ((a.nq + wanted_blocks - 1) / wanted_blocks + tile - 1) / tile * tile;
  const int64_t rows_per_block = std::min({a.nq, kQueryBlock, balanced});
  const int64_t q_blocks = (a.nq + rows_per_block - 1) / rows_per_block;
  const int64_t keys = std::min(a.nk, kKeyBlock);
  ThreadPool::Global().ParallelFor(a.batch * a.heads * q_blocks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> scores(static_cast<size_t>(rows_per_block * keys)), acc(static_cast<size_t>(rows_per_block * a.dv));
    std::vector<float> m(static_cast<size_t>(rows_per_block)), l(static_cast<size_t>(rows_per_block));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t qb = t % q_blocks, h = (t / q_blocks) % a.heads, b = t / (q_blocks * a.heads);
      const int64_t q0 = qb * rows_per_block;
      AttentionBlock(a, b, h, q0, std::min(rows_per_block, a.nq - q0), scores, acc, m, l);
    }
  });
}

}  // namespace perceiver::cpu
