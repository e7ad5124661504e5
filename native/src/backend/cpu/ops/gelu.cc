// Exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), as transformers' "gelu" activation
// computes it (not the tanh approximation); erf is the vectorised one of core/simd_math.h. Run
// as a product's epilogue (linear.cc), on each output block while it is in cache.
#include "backend/cpu/ops/cpu_ops.h"
#include "core/simd_math.h"

namespace perceiver::cpu {

void GeluRange(float* x, int64_t n) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f;
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128 half = _mm_set1_ps(0.5f), one = _mm_set1_ps(1.0f), scale = _mm_set1_ps(kInvSqrt2);
  for (; i + 4 <= n; i += 4) {
    const __m128 v = _mm_loadu_ps(x + i);
    const __m128 phi = _mm_add_ps(one, simd::Erf(_mm_mul_ps(v, scale)));
    _mm_storeu_ps(x + i, _mm_mul_ps(_mm_mul_ps(half, v), phi));
  }
#endif
  for (; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + simd::Erf(x[i] * kInvSqrt2));
}

}  // namespace perceiver::cpu
