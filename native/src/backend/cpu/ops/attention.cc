// Multi-head scaled dot-product attention on the CPU.
//
// For each (batch, head, block of queries) the scores are one sgemm (Q K^T, strided straight out
// of the projection layout, so heads need no transpose copy), then a masked softmax over each
// row, then one sgemm for probs @ V written into the head's slice of the output. Scores exist only
// for the block in hand, never for a whole head, unless the caller asked for the weights.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

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

void Attention(const AttentionArgs& a) {
  const int64_t q_row = a.heads * a.dqk, v_row = a.heads * a.dv;
  // Work items are (batch, head, block of query rows), so one head with many queries still uses
  // every thread, and the score block of an item stays within a few megabytes.
  constexpr int64_t kMaxScoreFloats = int64_t{1} << 20;
  const int64_t rows_per_block = std::max<int64_t>(1, std::min<int64_t>(a.nq, std::max<int64_t>(16, kMaxScoreFloats / std::max<int64_t>(1, a.nk))));
  const int64_t q_blocks = (a.nq + rows_per_block - 1) / rows_per_block;
  ThreadPool::Global().ParallelFor(a.batch * a.heads * q_blocks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> scratch(a.probs ? 0 : static_cast<size_t>(rows_per_block * a.nk));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t qb = t % q_blocks, h = (t / q_blocks) % a.heads, b = t / (q_blocks * a.heads);
      const int64_t q0 = qb * rows_per_block, rows = std::min(rows_per_block, a.nq - q0);
      const uint8_t* mask = a.key_mask ? a.key_mask + b * a.nk : nullptr;
      float* scores = a.probs ? a.probs + ((b * a.heads + h) * a.nq + q0) * a.nk : scratch.data();
      const float* q = a.q + (b * a.nq + q0) * q_row + h * a.dqk;
      const float* k = a.k + b * a.nk * q_row + h * a.dqk;
      const float* v = a.v + b * a.nk * v_row + h * a.dv;
      float* out = a.out + (b * a.nq + q0) * v_row + h * a.dv;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(a.nk),
                  static_cast<int>(a.dqk), 1.0f, q, static_cast<int>(q_row), k, static_cast<int>(q_row), 0.0f, scores,
                  static_cast<int>(a.nk));
      for (int64_t r = 0; r < rows; ++r) SoftmaxRow(scores + r * a.nk, a.nk, a.scale, mask);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(a.dv),
                  static_cast<int>(a.nk), 1.0f, scores, static_cast<int>(a.nk), v, static_cast<int>(v_row), 0.0f, out,
                  static_cast<int>(v_row));
    }
  });
}

}  // namespace perceiver::cpu
