// Internal to the CPU kernels: the per-ISA kernel tables that gemm.cc and rows.cc dispatch to.
// Each instruction set's kernels live in their own file compiled for it (kernels_avx512.cc,
// kernels_avx2.cc, with `#pragma GCC target`) and are reached only through these tables, after
// CPUID said the CPU runs them; this header itself is plain C++ so every file may include it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/cpu/kernels/gemm.h"

namespace perceiver::cpu::kernels {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };

// The tile every product kernel computes: kMr rows of A by kNr columns of packed W. Packed
// matrices are laid out for this tile on every ISA (AVX2 runs a 32-column panel as two 16-column
// halves), so weights packed once serve whichever kernels run.
constexpr int kMr = 14;
constexpr int kNr = 32;

// One kMr x kNr output tile: C[r, j] = epilogue(sum over k of A[r, k] * B[j, k]) for r < mr, j < nr.
//   float32 weights: a is float rows (stride lda), b a packed panel: k steps of kNr floats.
//   bf16 weights: b holds k/2 (rounded up) steps of kNr (column) x 2 (k, k+1) bf16 values; a is
//   A already rounded to bf16, stride lda in elements, k even (zero padded): bf16 bits (uint16)
//   when the kernel set's bf16_a_is_bits, else float32 values with the low 16 bits zero.
// Every row 0..kMr-1 of a is read (the driver pads a partial tile's rows with zeros), and the k
// sum runs in one fixed order whatever the tile's position, so results do not depend on threads.
struct TileArgs {
  int64_t k;
  const void* a;
  int64_t lda;
  const void* b;
  float* c;
  int64_t ldc;
  int mr, nr;
  float alpha;              // acc * alpha, then the epilogue
  const float* bias;        // at the tile's first column, or null
  bool gelu;
  const float* residual;    // at the tile's first element, or null; may alias c
  int64_t ld_residual;
  // k blocking: the sums start from acc (kMr x kNr, 64-byte aligned) when acc_in, and when
  // acc_out they are written back there instead of (epilogue and) C. A float32 kept in memory is
  // the register's value, so blocking k does not change any result.
  float* acc;
  bool acc_in, acc_out;
  // Where the driver wants this call to start pulling the next weight slice into L2 (the float32
  // AVX-512 kernel prefetches 128 bytes per 4 k steps from here), or null. A hint only.
  const void* prefetch;
};

struct KernelSet {
  Isa isa;
  void (*tile_f32)(const TileArgs&);
  void (*tile_bf16)(const TileArgs&);
  bool bf16_a_is_bits;
  // Rounds n floats to bf16, nearest even (NaN stays NaN), into bits or rounded floats (as above).
  void (*round_bf16)(const float* x, int64_t n, void* out);
  // Row kernels (see rows.h for their meaning).
  void (*layer_norm)(const float* x, const float* residual, float* sum_out, int64_t n, const float* gamma,
                     const float* beta, float eps, float* y);
  void (*gelu)(float* x, int64_t n);
  float (*row_max)(const float* x, int64_t n);
  float (*exp_shift_sum)(const float* x, float* y, int64_t n, float shift);
  void (*scale)(float* x, int64_t n, float s);
  void (*exp)(const float* x, float* y, int64_t n);
  void (*add)(const float* a, const float* b, float* y, int64_t n);
  // A register-only FMA loop (the machine's peak, for benchmarks): `iterations` rounds of
  // fma_loop_flops floating-point operations; writes a value to *sink so it is not optimised away.
  void (*fma_loop)(int64_t iterations, float* sink);
  int64_t fma_loop_flops;
};

// The kernel sets compiled into this binary (null when the compiler could not build one).
const KernelSet* ScalarKernels();
const KernelSet* Avx2Kernels();
const KernelSet* Avx512Kernels();
const KernelSet* Avx512Bf16Kernels();

// The best set this CPU's CPUID allows (CpuIsa) and the one products run on (DetectIsa): the
// same, except that a CPU with AVX512_BF16 runs the avx512 set when vdpbf16ps is slower there
// than widening bf16 to float32 (Bf16DotIsFaster, measured once: the results are the same).
Isa CpuIsa();
Isa DetectIsa();
bool Bf16DotIsFaster();
bool IsaSupported(Isa isa);
const char* IsaName(Isa isa);
bool ParseIsa(const char* name, Isa* isa);
const KernelSet& KernelsFor(Isa isa);  // isa must be supported
const KernelSet& ActiveKernels();

// The products of gemm.h on a given kernel set (tests check every set this CPU runs).
void GemmPackedOn(const KernelSet& ks, int64_t m, const float* a, int64_t lda, const PackedMatrix& w, float* c,
                  int64_t ldc, const GemmEpilogue& epilogue, ThreadPool* pool);
void GemmOn(const KernelSet& ks, bool b_transposed, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
            int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// bf16 helpers shared by the scalar kernels and the packers.
inline uint16_t RoundToBf16(float x) {
  uint32_t bits;
  __builtin_memcpy(&bits, &x, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
inline float Bf16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float x;
  __builtin_memcpy(&x, &bits, 4);
  return x;
}

}  // namespace perceiver::cpu::kernels
