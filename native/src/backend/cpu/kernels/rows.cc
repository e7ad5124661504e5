// Dispatch of the row kernels (rows.h) to the kernel set chosen from CPUID, and their threaded forms.
#include "backend/cpu/kernels/rows.h"

#include <algorithm>
#include <string>

#include "backend/cpu/kernels/kernel_set.h"
#include "core/engine_error.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

namespace {

const kernels::KernelSet& K() { return kernels::ActiveKernels(); }

void CheckLength(const char* fn, int64_t n) {
  if (n < 0) ThrowInvalidArgument(std::string(fn) + " length", "a length >= 0", std::to_string(n));
}

// Elements per chunk of the element-wise kernels: big enough that a chunk outweighs handing it to
// another thread (~10 us of work).
constexpr int64_t kElementGrain = 1 << 15;

}  // namespace

void LayerNormRow(const float* x, const float* residual, float* sum_out, int64_t n, const float* gamma,
                  const float* beta, float eps, float* y) {
  CheckLength("LayerNormRow", n);
  if (n > 0) K().layer_norm(x, residual, sum_out, n, gamma, beta, eps, y);
}

void LayerNormRows(int64_t rows, int64_t n, const float* x, int64_t ldx, const float* residual, int64_t ld_residual,
                   float* sum_out, int64_t ld_sum, const float* gamma, const float* beta, float eps, float* y,
                   int64_t ldy, ThreadPool* pool) {
  CheckLength("LayerNormRows", n);
  CheckLength("LayerNormRows", rows);
  if (ldx < n || ldy < n || (residual && ld_residual < n) || (sum_out && ld_sum < n)) {
    ThrowInvalidArgument("LayerNormRows strides", "row strides of at least the row (" + std::to_string(n) + ")", "a smaller one");
  }
  if (rows == 0 || n == 0) return;
  const kernels::KernelSet& ks = K();
  auto run = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      ks.layer_norm(x + r * ldx, residual ? residual + r * ld_residual : nullptr, sum_out ? sum_out + r * ld_sum : nullptr,
                    n, gamma, beta, eps, y + r * ldy);
    }
  };
  const int64_t grain = std::max<int64_t>(1, kElementGrain / (4 * n));
  if (pool) pool->ParallelFor(rows, grain, run);
  else run(0, rows);
}

void GeluInPlace(float* x, int64_t n) {
  CheckLength("GeluInPlace", n);
  if (n > 0) K().gelu(x, n);
}

void GeluInPlace(float* x, int64_t n, ThreadPool* pool) {
  CheckLength("GeluInPlace", n);
  if (n == 0) return;
  const kernels::KernelSet& ks = K();
  auto run = [&](int64_t i0, int64_t i1) { ks.gelu(x + i0, i1 - i0); };
  if (pool) pool->ParallelFor(n, kElementGrain, run);
  else run(0, n);
}

float RowMax(const float* x, int64_t n) {
  CheckLength("RowMax", n);
  return K().row_max(x, n);
}

float ExpShiftSum(const float* x, float* y, int64_t n, float shift) {
  CheckLength("ExpShiftSum", n);
  return K().exp_shift_sum(x, y, n, shift);
}

void ScaleRow(float* x, int64_t n, float s) {
  CheckLength("ScaleRow", n);
  K().scale(x, n, s);
}

void SoftmaxRow(float* x, int64_t n) {
  CheckLength("SoftmaxRow", n);
  if (n == 0) return;
  const kernels::KernelSet& ks = K();
  const float m = ks.row_max(x, n);
  const float sum = ks.exp_shift_sum(x, x, n, m);
  ks.scale(x, n, 1.0f / sum);
}

void SoftmaxRows(float* x, int64_t rows, int64_t n, ThreadPool* pool) {
  CheckLength("SoftmaxRows", n);
  CheckLength("SoftmaxRows", rows);
  if (rows == 0 || n == 0) return;
  auto run = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) SoftmaxRow(x + r * n, n);
  };
  const int64_t grain = std::max<int64_t>(1, kElementGrain / (4 * n));
  if (pool) pool->ParallelFor(rows, grain, run);
  else run(0, rows);
}

void ExpRow(const float* x, float* y, int64_t n) {
  CheckLength("ExpRow", n);
  K().exp(x, y, n);
}

void AddRow(const float* a, const float* b, float* y, int64_t n) {
  CheckLength("AddRow", n);
  K().add(a, b, y, n);
}

void Add(const float* a, const float* b, float* y, int64_t n, ThreadPool* pool) {
  CheckLength("Add", n);
  if (n == 0) return;
  const kernels::KernelSet& ks = K();
  auto run = [&](int64_t i0, int64_t i1) { ks.add(a + i0, b + i0, y + i0, i1 - i0); };
  if (pool) pool->ParallelFor(n, kElementGrain, run);
  else run(0, n);
}

}  // namespace perceiver::cpu
