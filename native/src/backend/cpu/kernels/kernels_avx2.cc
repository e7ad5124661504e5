// The AVX2 + FMA kernel set, for x86-64 CPUs without AVX-512. Compiled for AVX2 with
// `#pragma GCC target` (no global flags) and reached only through the table below, after CPUID
// said the CPU has it.
//
// With 16 ymm registers the 14 x 32 tile runs as blocks of 6 rows x 16 columns (12 accumulators,
// 2 weight vectors, 1 broadcast), the classic Haswell shape: two 16-column halves of the panel,
// rows 0-5, 6-11 and 12-13. Every element still sums k in the same order.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "backend/cpu/kernels/kernel_set.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi2")
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace perceiver::cpu::kernels {

namespace {

struct V256 {
  using reg = __m256;
  using mask = __m256;  // all-ones lanes
  static constexpr int W = 8;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float x) { return _mm256_set1_ps(x); }
  static mask first(int n) {
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
  }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg load_n(const float* p, int n) { return _mm256_maskload_ps(p, _mm256_castps_si256(first(n))); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static void store_n(float* p, reg v, int n) { _mm256_maskstore_ps(p, _mm256_castps_si256(first(n)), v); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm256_fnmadd_ps(a, b, c); }
  static reg abs(reg a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static mask lt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static mask gt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static mask isnan(reg a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
  static mask mask_or(mask a, mask b) { return _mm256_or_ps(a, b); }
  static bool any(mask m) { return _mm256_movemask_ps(m) != 0; }
  static reg select(mask m, reg if_false, reg if_true) { return _mm256_blendv_ps(if_false, if_true, m); }
  static reg floor(reg a) { return _mm256_floor_ps(a); }
  static reg pow2(reg n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static float hsum(reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float hmax(reg v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static reg bf16_even(reg pairs) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(pairs), 16)); }
  static reg bf16_odd(reg pairs) {
    return _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(pairs), _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  static reg round_bf16(reg x) {
    const __m256i bits = _mm256_castps_si256(x);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    r = _mm256_and_si256(r, _mm256_set1_epi32(static_cast<int>(0xffff0000u)));
    const __m256i quiet = _mm256_and_si256(_mm256_or_si256(bits, _mm256_set1_epi32(0x400000)), _mm256_set1_epi32(static_cast<int>(0xffff0000u)));
    return _mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(quiet), isnan(x));
  }
};

#include "backend/cpu/kernels/vec_kernels.inc"

template <bool BF16>
void TileAvx2(const TileArgs& t) {
  for (int col0 = 0; col0 < t.nr; col0 += 16) {
    Block<V256, 6, 2, BF16>(t, 0, col0);
    if (t.mr > 6) Block<V256, 6, 2, BF16>(t, 6, col0);
    if (t.mr > 12) Block<V256, 2, 2, BF16>(t, 12, col0);
  }
}

void TileF32Avx2(const TileArgs& t) { TileAvx2<false>(t); }
void TileBf16Avx2(const TileArgs& t) { TileAvx2<true>(t); }
void LayerNormAvx2(const float* x, const float* residual, float* sum_out, int64_t n, const float* gamma,
                   const float* beta, float eps, float* y) {
  VLayerNorm<V256>(x, residual, sum_out, n, gamma, beta, eps, y);
}
void GeluAvx2(float* x, int64_t n) { VGeluRow<V256>(x, n); }
float RowMaxAvx2(const float* x, int64_t n) { return VRowMax<V256>(x, n); }
float ExpShiftSumAvx2(const float* x, float* y, int64_t n, float shift) { return VExpShiftSum<V256>(x, y, n, shift); }
void ScaleAvx2(float* x, int64_t n, float s) { VScale<V256>(x, n, s); }
void ExpAvx2(const float* x, float* y, int64_t n) { VExpRow<V256>(x, y, n); }
void AddAvx2(const float* a, const float* b, float* y, int64_t n) { VAdd<V256>(a, b, y, n); }
void RoundBf16Avx2(const float* x, int64_t n, void* out) { VRoundBf16<V256>(x, n, out); }
void FmaLoopAvx2(int64_t iterations, float* sink) { VFmaLoop<V256>(iterations, sink); }

const KernelSet kAvx2 = {Isa::kAvx2, TileF32Avx2, TileBf16Avx2, false, RoundBf16Avx2, LayerNormAvx2, GeluAvx2,
                         RowMaxAvx2, ExpShiftSumAvx2, ScaleAvx2, ExpAvx2, AddAvx2, FmaLoopAvx2, 12 * 8 * 2};

}  // namespace

const KernelSet* Avx2Kernels() { return &kAvx2; }

}  // namespace perceiver::cpu::kernels

#pragma GCC pop_options
#else
namespace perceiver::cpu::kernels {
const KernelSet* Avx2Kernels() { return nullptr; }
}  // namespace perceiver::cpu::kernels
#endif
