// The AVX2 + FMA kernel set, for x86-64 CPUs without AVX-512. Compiled for AVX2 with
// `#pragma GCC target` and reached only through the table below, after CPUID said the CPU has it.
#include <cmath>
#include <cstdint>
#include <limits>

#include "backend/cpu/kernels/kernel_set.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi2")

namespace perceiver::cpu::kernels {

namespace {

#include "backend/cpu/kernels/kernels_generic.inc"

const KernelSet kAvx2 = {Isa::kAvx2, TileF32, TileBf16, false, RoundBf16, LayerNorm, Gelu, RowMax,
                         ExpShiftSum, Scale, Exp, Add, nullptr, 0};

}  // namespace

const KernelSet* Avx2Kernels() { return &kAvx2; }

}  // namespace perceiver::cpu::kernels

#pragma GCC pop_options
#else
namespace perceiver::cpu::kernels {
const KernelSet* Avx2Kernels() { return nullptr; }
}  // namespace perceiver::cpu::kernels
#endif
