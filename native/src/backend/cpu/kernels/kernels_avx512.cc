// AVX-512 kernel sets (with and without the bf16 dot product). Compiled for AVX-512 with
// `#pragma GCC target` (no global -mavx512 flags: the rest of the addon runs on any x86-64) and
// reached only through the tables below, after CPUID said the CPU has AVX-512.
#include <cmath>
#include <cstdint>
#include <limits>

#include "backend/cpu/kernels/kernel_set.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,avx2,bmi2")

namespace perceiver::cpu::kernels {

namespace {

#include "backend/cpu/kernels/kernels_generic.inc"

const KernelSet kAvx512 = {Isa::kAvx512, TileF32, TileBf16, false, RoundBf16, LayerNorm, Gelu, RowMax,
                           ExpShiftSum, Scale, Exp, Add, nullptr, 0};
const KernelSet kAvx512Bf16 = {Isa::kAvx512Bf16, TileF32, TileBf16, false, RoundBf16, LayerNorm, Gelu, RowMax,
                               ExpShiftSum, Scale, Exp, Add, nullptr, 0};

}  // namespace

const KernelSet* Avx512Kernels() { return &kAvx512; }
const KernelSet* Avx512Bf16Kernels() { return &kAvx512Bf16; }

}  // namespace perceiver::cpu::kernels

#pragma GCC pop_options
#else
namespace perceiver::cpu::kernels {
const KernelSet* Avx512Kernels() { return nullptr; }
const KernelSet* Avx512Bf16Kernels() { return nullptr; }
}  // namespace perceiver::cpu::kernels
#endif
