// The portable kernel set: plain C++ for CPUs without AVX2 and FMA (and non-x86 builds). The same
// tile contract and summation order as the vector kernels; libm's erfc and exp.
#include <cmath>
#include <limits>

#include "backend/cpu/kernels/kernel_set.h"

namespace perceiver::cpu::kernels {

namespace {

#include "backend/cpu/kernels/kernels_generic.inc"

const KernelSet kScalar = {Isa::kScalar, TileF32, TileBf16, false, RoundBf16, LayerNorm, Gelu, RowMax,
                           ExpShiftSum, Scale, Exp, Add, nullptr, 0};

}  // namespace

const KernelSet* ScalarKernels() { return &kScalar; }

}  // namespace perceiver::cpu::kernels
