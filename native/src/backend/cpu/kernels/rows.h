// Vectorised row kernels for the CPU backend: LayerNorm (optionally fused with the residual add
// before it), exact-erf GELU, softmax pieces for attention, exp and element-wise add. AVX-512 or
// AVX2 (+FMA) code chosen once from CPUID, the same choice as the products (GemmIsa()), with a
// scalar fallback elsewhere.
//
// The single-row/range functions run on the calling thread (the caller threads, e.g. over rows of
// an attention block); the *Rows / threaded forms split whole tensors over a ThreadPool. Results
// never depend on the number of threads: each row (or element) is computed by one thread in one
// fixed order.
//
// Accuracy: exp is Cephes' single-precision polynomial (about 1 ulp); GELU is x * Phi(x) with
// Phi(x) = erfc(-x / sqrt 2) / 2 and erfc from Numerical Recipes' Chebyshev fit (relative error
// below 1.2e-7 over the whole line, so GELU stays accurate in the negative tail where
// 1 + erf(x) cancels); LayerNorm's statistics are float32 Welford updates.
#pragma once

#include <cstdint>

namespace perceiver {
class ThreadPool;
}

namespace perceiver::cpu {

// One row of n values: s = x + residual (residual may be null: s = x); y = (s - mean(s)) /
// sqrt(var(s) + eps) * gamma + beta (gamma, beta may be null: 1 and 0), with the biased variance as
// torch's LayerNorm. When sum_out is not null it receives s. x is read once for the statistics and
// once for the output; y and sum_out may alias x or residual (element i is read before it is written).
void LayerNormRow(const float* x, const float* residual, float* sum_out, int64_t n, const float* gamma,
                  const float* beta, float eps, float* y);

// LayerNormRow over `rows` rows stored with the given row strides (in elements; residual and
// sum_out may be null, their strides are then ignored), threaded over pool (null: this thread).
void LayerNormRows(int64_t rows, int64_t n, const float* x, int64_t ldx, const float* residual, int64_t ld_residual,
                   float* sum_out, int64_t ld_sum, const float* gamma, const float* beta, float eps, float* y,
                   int64_t ldy, ThreadPool* pool);

// x = GELU(x) = x * Phi(x), exact (erf) form as torch's nn.GELU(), over n contiguous values.
void GeluInPlace(float* x, int64_t n);
void GeluInPlace(float* x, int64_t n, ThreadPool* pool);

// Softmax pieces: the row's maximum (-inf for n = 0; NaN if any value is NaN), y = exp(x - shift)
// returning the float32 sum of y (y may alias x), and x *= s.
float RowMax(const float* x, int64_t n);
float ExpShiftSum(const float* x, float* y, int64_t n, float shift);
void ScaleRow(float* x, int64_t n, float s);
// Softmax of one row in place: the three steps above.
void SoftmaxRow(float* x, int64_t n);
// Softmax of each of `rows` contiguous rows of n values, threaded over pool (null: this thread).
void SoftmaxRows(float* x, int64_t rows, int64_t n, ThreadPool* pool);

// y = exp(x) (y may alias x); y = a + b (y may alias a or b).
void ExpRow(const float* x, float* y, int64_t n);
void AddRow(const float* a, const float* b, float* y, int64_t n);
void Add(const float* a, const float* b, float* y, int64_t n, ThreadPool* pool);

}  // namespace perceiver::cpu
