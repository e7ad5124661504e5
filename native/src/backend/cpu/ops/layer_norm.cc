// LayerNorm over the last dimension: a two-pass mean and variance (subtracting the mean before
// squaring, so rows with a large mean stay exact), accumulated in float over several lanes, as
// PyTorch's CPU kernel does.
#include <cmath>
#include <vector>

#include "backend/cpu/ops/cpu_ops.h"
#include "core/simd_math.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

namespace {

float RowSum(const float* x, int64_t n) {
  int64_t i = 0;
  float sum = 0.0f;
#if defined(__SSE2__)
  __m128 a = _mm_setzero_ps(), b = _mm_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    a = _mm_add_ps(a, _mm_loadu_ps(x + i));
    b = _mm_add_ps(b, _mm_loadu_ps(x + i + 4));
  }
  sum = simd::HorizontalSum(_mm_add_ps(a, b));
#endif
  for (; i < n; ++i) sum += x[i];
  return sum;
}

float RowSquaredDeviation(const float* x, int64_t n, float mean) {
  int64_t i = 0;
  float sum = 0.0f;
#if defined(__SSE2__)
  const __m128 m = _mm_set1_ps(mean);
  __m128 a = _mm_setzero_ps(), b = _mm_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m128 d0 = _mm_sub_ps(_mm_loadu_ps(x + i), m);
    const __m128 d1 = _mm_sub_ps(_mm_loadu_ps(x + i + 4), m);
    a = _mm_add_ps(a, _mm_mul_ps(d0, d0));
    b = _mm_add_ps(b, _mm_mul_ps(d1, d1));
  }
  sum = simd::HorizontalSum(_mm_add_ps(a, b));
#endif
  for (; i < n; ++i) sum += (x[i] - mean) * (x[i] - mean);
  return sum;
}

}  // namespace

void LayerNorm(const LayerNormOp& op) {
  const float* gamma = op.gamma->values();
  const float* beta = op.beta->values();
  const int64_t dim = op.dim;
  ThreadPool::Global().ParallelFor(op.rows, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> summed(op.residual ? static_cast<size_t>(dim) : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = op.x + r * op.ldx;
      if (op.residual != nullptr) {  // LayerNorm(x + residual), the sum never stored
        const float* rr = op.residual + r * op.ld_residual;
        for (int64_t i = 0; i < dim; ++i) summed[i] = xr[i] + rr[i];
        xr = summed.data();
      }
      float* yr = op.y + r * op.ldy;
      const float mean = RowSum(xr, dim) / static_cast<float>(dim);
      const float var = RowSquaredDeviation(xr, dim, mean) / static_cast<float>(dim);
      const float inv_std = 1.0f / std::sqrt(var + op.eps);
      for (int64_t i = 0; i < dim; ++i) yr[i] = (xr[i] - mean) * inv_std * gamma[i] + beta[i];
    }
  });
}

}  // namespace perceiver::cpu
