// Multi-head scaled dot-product attention on the CPU.
//
// For each (batch, head) the score block [nq, nk] is one sgemm (Q K^T, strided straight out of
// the projection layout, so heads need no transpose copy), then a masked softmax over each row,
// then one sgemm for probs @ V written into the head's slice of the output. The score block is
// materialised per (batch, head) only, never for all heads at once.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/ops/cpu_ops.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

namespace {

// Softmax of scale * scores over each row, skipping keys whose mask is 0 (their weight is exactly
// zero, which is what adding transformers' finfo.min bias produces after exp underflows).
void MaskedSoftmaxRows(float* scores, int64_t nq, int64_t nk, float scale, const uint8_t* key_mask) {
  ThreadPool::Global().ParallelFor(nq, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* s = scores + r * nk;
      float max_v = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < nk; ++j) {
        if (key_mask && !key_mask[j]) continue;
        s[j] *= scale;
        max_v = std::max(max_v, s[j]);
      }
      double sum = 0.0;
      for (int64_t j = 0; j < nk; ++j) {
        if (key_mask && !key_mask[j]) {
          s[j] = 0.0f;
          continue;
        }
        s[j] = std::exp(s[j] - max_v);
        sum += s[j];
      }
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t j = 0; j < nk; ++j) s[j] *= inv;
    }
  });
}

}  // namespace

void Attention(const AttentionArgs& a) {
  const int64_t q_row = a.heads * a.dqk, v_row = a.heads * a.dv;
  std::vector<float> scratch(a.probs ? 0 : static_cast<size_t>(a.nq * a.nk));
  for (int64_t b = 0; b < a.batch; ++b) {
    const uint8_t* mask = a.key_mask ? a.key_mask + b * a.nk : nullptr;
    for (int64_t h = 0; h < a.heads; ++h) {
      float* scores = a.probs ? a.probs + ((b * a.heads + h) * a.nq * a.nk) : scratch.data();
      const float* q = a.q + b * a.nq * q_row + h * a.dqk;
      const float* k = a.k + b * a.nk * q_row + h * a.dqk;
      const float* v = a.v + b * a.nk * v_row + h * a.dv;
      float* out = a.out + b * a.nq * v_row + h * a.dv;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(a.nq), static_cast<int>(a.nk),
                  static_cast<int>(a.dqk), 1.0f, q, static_cast<int>(q_row), k, static_cast<int>(q_row), 0.0f, scores,
                  static_cast<int>(a.nk));
      MaskedSoftmaxRows(scores, a.nq, a.nk, a.scale, mask);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(a.nq), static_cast<int>(a.dv),
                  static_cast<int>(a.nk), 1.0f, scores, static_cast<int>(a.nk), v, static_cast<int>(v_row), 0.0f, out,
                  static_cast<int>(v_row));
    }
  }
}

}  // namespace perceiver::cpu
