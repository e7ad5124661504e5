// Vectorised float math for the CPU kernels: exp (Cephes' single-precision polynomial, about
// 1 ulp) and erf (Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7, the form PyTorch's
// vectorised CPU erf uses), four lanes at a time with SSE2 (the x86-64 baseline, so a prebuilt
// binary runs on every x86-64 CPU) and a scalar fallback elsewhere. libm's expf/erff are exact to
// the last bit but scalar; in softmax and GELU they cost more than the matrix products around them.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace perceiver::simd {

constexpr float kExpHi = 88.3762626647949f;
constexpr float kExpLo = -88.3762626647949f;

#if defined(__SSE2__)

inline __m128 Exp(__m128 x) {
  const __m128 one = _mm_set1_ps(1.0f);
  x = _mm_min_ps(_mm_max_ps(x, _mm_set1_ps(kExpLo)), _mm_set1_ps(kExpHi));
  // n = floor(x / ln 2 + 0.5); x = x - n ln 2 (in two parts for precision).
  __m128 fx = _mm_add_ps(_mm_mul_ps(x, _mm_set1_ps(1.44269504088896341f)), _mm_set1_ps(0.5f));
  __m128 t = _mm_cvtepi32_ps(_mm_cvttps_epi32(fx));
  fx = _mm_sub_ps(t, _mm_and_ps(_mm_cmpgt_ps(t, fx), one));
  x = _mm_sub_ps(x, _mm_mul_ps(fx, _mm_set1_ps(0.693359375f)));
  x = _mm_sub_ps(x, _mm_mul_ps(fx, _mm_set1_ps(-2.12194440e-4f)));
  const __m128 z = _mm_mul_ps(x, x);
  __m128 y = _mm_set1_ps(1.9875691500e-4f);
  y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(1.3981999507e-3f));
  y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(8.3334519073e-3f));
  y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(4.1665795894e-2f));
  y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(1.6666665459e-1f));
  y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(5.0000001201e-1f));
  y = _mm_add_ps(_mm_add_ps(_mm_mul_ps(y, z), x), one);
  // Scale by 2^n through the exponent bits.
  const __m128i n = _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(fx), _mm_set1_epi32(127)), 23);
  return _mm_mul_ps(y, _mm_castsi128_ps(n));
}

inline __m128 Erf(__m128 x) {
  const __m128 sign_mask = _mm_set1_ps(-0.0f);
  const __m128 sign = _mm_and_ps(x, sign_mask);
  const __m128 ax = _mm_andnot_ps(sign_mask, x);
  const __m128 one = _mm_set1_ps(1.0f);
  const __m128 t = _mm_div_ps(one, _mm_add_ps(one, _mm_mul_ps(_mm_set1_ps(0.3275911f), ax)));
  __m128 r = _mm_set1_ps(1.061405429f);
  r = _mm_add_ps(_mm_mul_ps(r, t), _mm_set1_ps(-1.453152027f));
  r = _mm_add_ps(_mm_mul_ps(r, t), _mm_set1_ps(1.421413741f));
  r = _mm_add_ps(_mm_mul_ps(r, t), _mm_set1_ps(-0.284496736f));
  r = _mm_add_ps(_mm_mul_ps(r, t), _mm_set1_ps(0.254829592f));
  r = _mm_mul_ps(r, t);
  const __m128 e = Exp(_mm_sub_ps(_mm_setzero_ps(), _mm_mul_ps(ax, ax)));
  const __m128 result = _mm_sub_ps(one, _mm_mul_ps(r, e));
  return _mm_or_ps(result, sign);
}

inline float HorizontalSum(__m128 v) {
  __m128 shuf = _mm_shuffle_ps(v, v, _MM_SHUFFLE(2, 3, 0, 1));
  __m128 sums = _mm_add_ps(v, shuf);
  shuf = _mm_movehl_ps(shuf, sums);
  sums = _mm_add_ss(sums, shuf);
  return _mm_cvtss_f32(sums);
}

inline float HorizontalMax(__m128 v) {
  __m128 shuf = _mm_shuffle_ps(v, v, _MM_SHUFFLE(2, 3, 0, 1));
  __m128 m = _mm_max_ps(v, shuf);
  shuf = _mm_movehl_ps(shuf, m);
  m = _mm_max_ss(m, shuf);
  return _mm_cvtss_f32(m);
}

#endif

// Scalar versions with the same formulas, for loop tails and non-SSE2 targets.
inline float Exp(float x) {
#if defined(__SSE2__)
  return _mm_cvtss_f32(Exp(_mm_set_ss(x)));
#else
  return std::exp(x);
#endif
}

inline float Erf(float x) {
#if defined(__SSE2__)
  return _mm_cvtss_f32(Erf(_mm_set_ss(x)));
#else
  return std::erf(x);
#endif
}

}  // namespace perceiver::simd
