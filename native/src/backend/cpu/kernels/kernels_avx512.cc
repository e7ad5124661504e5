// AVX-512 kernel sets: "avx512" (float32 FMA; bf16 weights widened to float32 in the kernel) and
// "avx512-bf16" (bf16 weights through vdpbf16ps on A rounded to bf16). The two give bitwise the
// same products (bf16 x bf16 is exact in float32, and both add a pair's odd product first, with
// one rounding per addition), apart from vdpbf16ps flushing subnormals; which one runs on a CPU
// with AVX512_BF16 is decided by measuring (Bf16DotIsFaster). Compiled for AVX-512 with
// `#pragma GCC target` (no global -mavx512 flags: the rest of the addon runs on any x86-64) and
// reached only through the tables below, after CPUID said the CPU has AVX-512.
//
// The product tile is 14 rows x 32 columns: 28 zmm accumulators, 2 for the weights' k step and
// one broadcast of A (from memory, folded into the FMA): 32 registers. Per k step 2 weight
// loads and 14 broadcasts feed 28 FMAs, so two FMA pipes stay busy on 3 load ports.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>

#include "backend/cpu/kernels/kernel_set.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,avx2,bmi2")
// GCC 12 reports its own _mm512_undefined_* placeholders inside the intrinsics as uninitialised.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace perceiver::cpu::kernels {

namespace {

struct V512 {
  using reg = __m512;
  using mask = __mmask16;
  static constexpr int W = 16;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static mask first(int n) { return n >= 16 ? static_cast<mask>(0xffff) : static_cast<mask>((1u << n) - 1u); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static void store_n(float* p, reg v, int n) { _mm512_mask_storeu_ps(p, first(n), v); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm512_fnmadd_ps(a, b, c); }
  static reg abs(reg a) { return _mm512_abs_ps(a); }
  static mask lt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static mask gt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static mask isnan(reg a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  static mask mask_or(mask a, mask b) { return static_cast<mask>(a | b); }
  static bool any(mask m) { return m != 0; }
  static reg select(mask m, reg if_false, reg if_true) { return _mm512_mask_blend_ps(m, if_false, if_true); }
  static reg floor(reg a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
  static reg pow2(reg n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static float hsum(reg v) { return _mm512_reduce_add_ps(v); }
  static float hmax(reg v) { return _mm512_reduce_max_ps(v); }
  static reg bf16_even(reg pairs) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(pairs), 16)); }
  static reg bf16_odd(reg pairs) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(pairs), _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  static reg round_bf16(reg x) {
    const __m512i bits = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    r = _mm512_and_si512(r, _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
    const __m512i quiet = _mm512_and_si512(_mm512_or_si512(bits, _mm512_set1_epi32(0x400000)), _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
    return _mm512_mask_blend_ps(isnan(x), _mm512_castsi512_ps(r), _mm512_castsi512_ps(quiet));
  }
};

#include "backend/cpu/kernels/vec_kernels.inc"

void TileF32Avx512(const TileArgs& t) { Block<V512, kMr, 2, false>(t, 0, 0); }
void TileBf16Widen(const TileArgs& t) { Block<V512, kMr, 2, true>(t, 0, 0); }

// bf16 weights with vdpbf16ps: A is bf16 bits, one (k, k+1) pair per 32-bit broadcast.
void TileBf16Dot(const TileArgs& t) {
  __m512 acc[kMr][2];
#pragma GCC unroll 16
  for (int r = 0; r < kMr; ++r) {
    acc[r][0] = t.acc_in ? _mm512_load_ps(t.acc + r * kNr) : _mm512_setzero_ps();
    acc[r][1] = t.acc_in ? _mm512_load_ps(t.acc + r * kNr + 16) : _mm512_setzero_ps();
  }
  const uint16_t* a = static_cast<const uint16_t*>(t.a);
  const uint32_t* ar[kMr];
#pragma GCC unroll 16
  for (int r = 0; r < kMr; ++r) ar[r] = reinterpret_cast<const uint32_t*>(a + r * t.lda);
  const __m512i* b = static_cast<const __m512i*>(t.b);
  const int64_t steps = (t.k + 1) / 2;
  for (int64_t s = 0; s < steps; ++s) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b + 2 * s);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(b + 2 * s + 1);
#pragma GCC unroll 16
    for (int r = 0; r < kMr; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(ar[r][s]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
    }
  }
  StoreBlock<V512, kMr, 2>(t, 0, 0, acc);
}

// A rounded to bf16 bits (nearest even) for TileBf16Dot.
void RoundBf16Bits(const float* x, int64_t n, void* out) {
  uint16_t* y = static_cast<uint16_t*>(out);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
  for (; i < n; ++i) y[i] = RoundToBf16(x[i]);
}

void LayerNormAvx512(const float* x, const float* residual, float* sum_out, int64_t n, const float* gamma,
                     const float* beta, float eps, float* y) {
  VLayerNorm<V512>(x, residual, sum_out, n, gamma, beta, eps, y);
}
void GeluAvx512(float* x, int64_t n) { VGeluRow<V512>(x, n); }
float RowMaxAvx512(const float* x, int64_t n) { return VRowMax<V512>(x, n); }
float ExpShiftSumAvx512(const float* x, float* y, int64_t n, float shift) { return VExpShiftSum<V512>(x, y, n, shift); }
void ScaleAvx512(float* x, int64_t n, float s) { VScale<V512>(x, n, s); }
void ExpAvx512(const float* x, float* y, int64_t n) { VExpRow<V512>(x, y, n); }
void AddAvx512(const float* a, const float* b, float* y, int64_t n) { VAdd<V512>(a, b, y, n); }
void RoundBf16Avx512(const float* x, int64_t n, void* out) { VRoundBf16<V512>(x, n, out); }
void FmaLoopAvx512(int64_t iterations, float* sink) { VFmaLoop<V512>(iterations, sink); }

const KernelSet kAvx512 = {Isa::kAvx512, TileF32Avx512, TileBf16Widen, false, RoundBf16Avx512, LayerNormAvx512,
                           GeluAvx512, RowMaxAvx512, ExpShiftSumAvx512, ScaleAvx512, ExpAvx512, AddAvx512,
                           FmaLoopAvx512, 12 * 16 * 2};
const KernelSet kAvx512Bf16 = {Isa::kAvx512Bf16, TileF32Avx512, TileBf16Dot, true, RoundBf16Bits, LayerNormAvx512,
                               GeluAvx512, RowMaxAvx512, ExpShiftSumAvx512, ScaleAvx512, ExpAvx512, AddAvx512,
                               FmaLoopAvx512, 12 * 16 * 2};

// Register-only throughput of vdpbf16ps against vfmadd231ps, in multiply-adds per second (best
// of a few short runs). Not every CPU with AVX512_BF16 runs it at full rate: on the Xeon this was
// developed on it does half the multiply-adds of two FMA pipes, and the widening kernel is 1.4x
// faster; Zen 4/5 run it at full rate.
template <bool kDot>
double MultiplyAddsPerSecond() {
  constexpr int64_t kIterations = 1 << 14;
  double best = 1e30;
  float sink = 0;
  for (int run = 0; run < 5; ++run) {
    __m512 acc[12];
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps(static_cast<float>(j));
    __m512 a = _mm512_set1_ps(1.0f);
    const __m512 b = _mm512_set1_ps(0.5f);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < kIterations; ++i) {
#pragma GCC unroll 12
      for (int j = 0; j < 12; ++j) {
        acc[j] = kDot ? _mm512_dpbf16_ps(acc[j], (__m512bh)a, (__m512bh)b) : _mm512_fmadd_ps(acc[j], a, b);
      }
      __asm__ volatile("" : "+v"(a));  // keeps the loop from being folded
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    __m512 s = acc[0];
    for (int j = 1; j < 12; ++j) s = _mm512_add_ps(s, acc[j]);
    sink += _mm512_reduce_add_ps(s);
  }
  volatile float keep = sink;
  (void)keep;
  return 12.0 * 16 * (kDot ? 2 : 1) * kIterations / best;
}

}  // namespace

bool Bf16DotIsFaster() { return MultiplyAddsPerSecond<true>() >= MultiplyAddsPerSecond<false>(); }

const KernelSet* Avx512Kernels() { return &kAvx512; }
const KernelSet* Avx512Bf16Kernels() { return &kAvx512Bf16; }

}  // namespace perceiver::cpu::kernels

#pragma GCC pop_options
#else
namespace perceiver::cpu::kernels {
const KernelSet* Avx512Kernels() { return nullptr; }
const KernelSet* Avx512Bf16Kernels() { return nullptr; }
bool Bf16DotIsFaster() { return false; }
}  // namespace perceiver::cpu::kernels
#endif
