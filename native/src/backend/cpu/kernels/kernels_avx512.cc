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

// The float32 tile's k loop in assembly: written in C++ (Block), GCC keeps 14 row pointers for
// the broadcasts of A and, short of general registers, reloads three of them from the stack on
// every k step. Here the 14 rows are reached from five base pointers (rows 3i, 3i+1, 3i+2 at
// base_i + {0, 1, 2} * lda), so the loop needs 8 general registers, and zmm0-27 hold the tile,
// zmm28-29 the weights' k step, zmm30-31 the broadcasts (alternating, so consecutive rows do
// not wait on one register). The arithmetic is Block's: per k, acc[r][v] += a[r][k] * b[k][v]
// with one FMA each, so the results are bitwise those of the C++ kernel.
#define PIO_W(db) "vmovups " #db "(%[b]), %%zmm28\n\tvmovups " #db "+64(%[b]), %%zmm29\n\t"
#define PIO_ROW(mem, bc, acc0, acc1)                                                                  \
  "vbroadcastss " mem ", %%zmm" #bc "\n\tvfmadd231ps %%zmm" #bc ", %%zmm28, %%zmm" #acc0 "\n\t" \
  "vfmadd231ps %%zmm" #bc ", %%zmm29, %%zmm" #acc1 "\n\t"
#define PIO_STEP(d, db)                                                                               \
  PIO_W(db)                                                                                           \
  PIO_ROW(#d "(%[a0])", 30, 0, 1) PIO_ROW(#d "(%[a0],%[ldab],1)", 31, 2, 3)                          \
  PIO_ROW(#d "(%[a0],%[ldab],2)", 30, 4, 5) PIO_ROW(#d "(%[a1])", 31, 6, 7)                          \
  PIO_ROW(#d "(%[a1],%[ldab],1)", 30, 8, 9) PIO_ROW(#d "(%[a1],%[ldab],2)", 31, 10, 11)              \
  PIO_ROW(#d "(%[a2])", 30, 12, 13) PIO_ROW(#d "(%[a2],%[ldab],1)", 31, 14, 15)                      \
  PIO_ROW(#d "(%[a2],%[ldab],2)", 30, 16, 17) PIO_ROW(#d "(%[a3])", 31, 18, 19)                      \
  PIO_ROW(#d "(%[a3],%[ldab],1)", 30, 20, 21) PIO_ROW(#d "(%[a3],%[ldab],2)", 31, 22, 23)            \
  PIO_ROW(#d "(%[a4])", 30, 24, 25) PIO_ROW(#d "(%[a4],%[ldab],1)", 31, 26, 27)
#define PIO_ACC(op, i) op " " #i "*64(%[in]), %%zmm" #i "\n\t"
#define PIO_ACC_ALL(op)                                                                                 \
  PIO_ACC(op, 0) PIO_ACC(op, 1) PIO_ACC(op, 2) PIO_ACC(op, 3) PIO_ACC(op, 4) PIO_ACC(op, 5) PIO_ACC(op, 6) \
  PIO_ACC(op, 7) PIO_ACC(op, 8) PIO_ACC(op, 9) PIO_ACC(op, 10) PIO_ACC(op, 11) PIO_ACC(op, 12)            \
  PIO_ACC(op, 13) PIO_ACC(op, 14) PIO_ACC(op, 15) PIO_ACC(op, 16) PIO_ACC(op, 17) PIO_ACC(op, 18)         \
  PIO_ACC(op, 19) PIO_ACC(op, 20) PIO_ACC(op, 21) PIO_ACC(op, 22) PIO_ACC(op, 23) PIO_ACC(op, 24)         \
  PIO_ACC(op, 25) PIO_ACC(op, 26) PIO_ACC(op, 27)
#define PIO_ACC_STORE(i) "vmovups %%zmm" #i ", " #i "*64(%[out])\n\t"
#define PIO_ACC_STORE_ALL                                                                               \
  PIO_ACC_STORE(0) PIO_ACC_STORE(1) PIO_ACC_STORE(2) PIO_ACC_STORE(3) PIO_ACC_STORE(4) PIO_ACC_STORE(5)   \
  PIO_ACC_STORE(6) PIO_ACC_STORE(7) PIO_ACC_STORE(8) PIO_ACC_STORE(9) PIO_ACC_STORE(10) PIO_ACC_STORE(11) \
  PIO_ACC_STORE(12) PIO_ACC_STORE(13) PIO_ACC_STORE(14) PIO_ACC_STORE(15) PIO_ACC_STORE(16)               \
  PIO_ACC_STORE(17) PIO_ACC_STORE(18) PIO_ACC_STORE(19) PIO_ACC_STORE(20) PIO_ACC_STORE(21)               \
  PIO_ACC_STORE(22) PIO_ACC_STORE(23) PIO_ACC_STORE(24) PIO_ACC_STORE(25) PIO_ACC_STORE(26)               \
  PIO_ACC_STORE(27)

// The sums start from `in` (kMr x kNr floats) when it is not null, else from zero, and end in `out`.
// `prefetch`: where to pull 128 bytes toward L2 per 4 k steps (the next slice of W), or null.
void F32Loop14x32(const float* a, int64_t lda, const float* b, int64_t k, const float* in, float* out, const void* prefetch) {
  static_assert(kMr == 14 && kNr == 32, "the assembly is written for 14 x 32 tiles");
  const char* pf = prefetch ? static_cast<const char*>(prefetch) : reinterpret_cast<const char*>(b);
  const float* a0 = a;
  const float* a1 = a + 3 * lda;
  const float* a2 = a + 6 * lda;
  const float* a3 = a + 9 * lda;
  const float* a4 = a + 12 * lda;
  const int64_t ldab = lda * static_cast<int64_t>(sizeof(float));
  int64_t quads = k / 4, rest = k % 4;
  // One asm statement from the first load of the accumulators to their store: between two
  // statements the compiler may use any vector register.
  __asm__ volatile(
      "test %[in], %[in]\n\t"
      "jz 5f\n\t"
      PIO_ACC_ALL("vmovups")
      "jmp 6f\n\t"
      "5:\n\t"
      "vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
      "vmovaps %%zmm0, %%zmm1\n\tvmovaps %%zmm0, %%zmm2\n\tvmovaps %%zmm0, %%zmm3\n\tvmovaps %%zmm0, %%zmm4\n\t"
      "vmovaps %%zmm0, %%zmm5\n\tvmovaps %%zmm0, %%zmm6\n\tvmovaps %%zmm0, %%zmm7\n\tvmovaps %%zmm0, %%zmm8\n\t"
      "vmovaps %%zmm0, %%zmm9\n\tvmovaps %%zmm0, %%zmm10\n\tvmovaps %%zmm0, %%zmm11\n\tvmovaps %%zmm0, %%zmm12\n\t"
      "vmovaps %%zmm0, %%zmm13\n\tvmovaps %%zmm0, %%zmm14\n\tvmovaps %%zmm0, %%zmm15\n\tvmovaps %%zmm0, %%zmm16\n\t"
      "vmovaps %%zmm0, %%zmm17\n\tvmovaps %%zmm0, %%zmm18\n\tvmovaps %%zmm0, %%zmm19\n\tvmovaps %%zmm0, %%zmm20\n\t"
      "vmovaps %%zmm0, %%zmm21\n\tvmovaps %%zmm0, %%zmm22\n\tvmovaps %%zmm0, %%zmm23\n\tvmovaps %%zmm0, %%zmm24\n\t"
      "vmovaps %%zmm0, %%zmm25\n\tvmovaps %%zmm0, %%zmm26\n\tvmovaps %%zmm0, %%zmm27\n\t"
      "6:\n\t"
      "test %[quads], %[quads]\n\t"
      "jz 2f\n\t"
      "1:\n\t"
      PIO_STEP(0, 0) "prefetcht1 (%[pf])\n\t" PIO_STEP(4, 128) PIO_STEP(8, 256) "prefetcht1 64(%[pf])\n\t" PIO_STEP(12, 384)
      "add $512, %[b]\n\t"
      "add $128, %[pf]\n\t"
      "add $16, %[a0]\n\tadd $16, %[a1]\n\tadd $16, %[a2]\n\tadd $16, %[a3]\n\tadd $16, %[a4]\n\t"
      "dec %[quads]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "test %[rest], %[rest]\n\t"
      "jz 4f\n\t"
      "3:\n\t"
      PIO_STEP(0, 0)
      "add $128, %[b]\n\t"
      "add $4, %[a0]\n\tadd $4, %[a1]\n\tadd $4, %[a2]\n\tadd $4, %[a3]\n\tadd $4, %[a4]\n\t"
      "dec %[rest]\n\t"
      "jnz 3b\n\t"
      "4:\n\t"
      PIO_ACC_STORE_ALL
      : [b] "+r"(b), [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [a4] "+r"(a4),
        [quads] "+r"(quads), [rest] "+r"(rest), [pf] "+r"(pf)
      : [ldab] "r"(ldab), [in] "r"(in), [out] "r"(out)
      : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",
        "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31");
}
#undef PIO_W
#undef PIO_ROW
#undef PIO_STEP
#undef PIO_ACC
#undef PIO_ACC_ALL
#undef PIO_ACC_STORE
#undef PIO_ACC_STORE_ALL

void TileF32Avx512(const TileArgs& t) {
  alignas(64) float local[kMr * kNr];
  float* acc = t.acc_out ? t.acc : local;
  F32Loop14x32(static_cast<const float*>(t.a), t.lda, static_cast<const float*>(t.b), t.k, t.acc_in ? t.acc : nullptr, acc,
               t.prefetch);
  if (t.acc_out) return;
  __m512 sums[kMr][2];
#pragma GCC unroll 16
  for (int r = 0; r < kMr; ++r) {
    sums[r][0] = _mm512_load_ps(acc + r * kNr);
    sums[r][1] = _mm512_load_ps(acc + r * kNr + 16);
  }
  StoreBlock<V512, kMr, 2>(t, 0, 0, sums);
}
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
