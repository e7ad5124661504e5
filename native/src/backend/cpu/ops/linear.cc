// Linear layers with their epilogue fused: y = epilogue(x @ W^T) with bias, exact GELU and a
// residual applied to each block of the output while it is still in cache, so a layer is one
// pass over its output instead of four. Products go through single-threaded sgemm on blocks of
// rows (or, for a few rows, of output columns) split across the engine's thread pool.
//
// bfloat16 models: the weights were rounded to bf16 at load, and each block of x is rounded to
// bf16 here before its product (backend.h's RoundsProductInputs: the points the CUDA backend
// rounds at); the product accumulates in float32.
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cpu/ops/cpu_ops.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

namespace {

// The product of `rows` rows of x (from x_rows, row stride ldx) x output columns [c0, c1) (into
// `out` with row stride ldo), with beta 0 or 1.
void Product(const float* x_rows, int64_t ldx, int64_t in, const float* w, int64_t rows, int64_t c0, int64_t c1,
             float beta, float* out, int64_t ldo) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(c1 - c0),
              static_cast<int>(in), 1.0f, x_rows, static_cast<int>(ldx), w + c0 * in, static_cast<int>(in), beta, out,
              static_cast<int>(ldo));
}

void Block(const LinearOp& op, bool round_bf16, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  const CpuWeight& W = Cpu(op.weight);
  const int64_t in = W.cols(), cols = c1 - c0;
  const float* bias = op.bias ? op.bias->values() : nullptr;
  const float* x = op.x + r0 * op.ldx;
  int64_t ldx = op.ldx;
  std::vector<float> rounded;
  if (round_bf16) {
    rounded.resize(static_cast<size_t>((r1 - r0) * in));
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t i = 0; i < in; ++i) rounded[(r - r0) * in + i] = RoundToBfloat16(op.x[r * op.ldx + i]);
    }
    x = rounded.data();
    ldx = in;
  }
  if (op.residual == nullptr) {
    float* y = op.y + r0 * op.ldy + c0;
    float beta = 0.0f;
    if (bias != nullptr) {
      for (int64_t r = r0; r < r1; ++r) std::memcpy(op.y + r * op.ldy + c0, bias + c0, sizeof(float) * cols);
      beta = 1.0f;
    }
    Product(x, ldx, in, W.matrix(), r1 - r0, c0, c1, beta, y, op.ldy);
    if (op.gelu) {
      for (int64_t r = r0; r < r1; ++r) GeluRange(op.y + r * op.ldy + c0, cols);
    }
    return;
  }
  // With a residual (which may alias y) the product lands in a scratch block first.
  std::vector<float> acc(static_cast<size_t>((r1 - r0) * cols));
  Product(x, ldx, in, W.matrix(), r1 - r0, c0, c1, 0.0f, acc.data(), cols);
  for (int64_t r = r0; r < r1; ++r) {
    float* a = acc.data() + (r - r0) * cols;
    if (bias != nullptr) {
      for (int64_t c = 0; c < cols; ++c) a[c] += bias[c0 + c];
    }
    if (op.gelu) GeluRange(a, cols);
    const int64_t rr = op.residual_period ? r % op.residual_period : r;
    const float* res = op.residual + rr * op.ld_residual + c0;
    float* y = op.y + r * op.ldy + c0;
    for (int64_t c = 0; c < cols; ++c) y[c] = a[c] + res[c];
  }
}

}  // namespace

void Linear(const LinearOp& op, Precision precision) {
  const int64_t rows = op.rows, out = op.weight->rows();
  if (rows == 0 || out == 0) return;
  const bool round_bf16 = RoundsProductInputs(precision);
  ThreadPool& pool = ThreadPool::Global();
  // Rows split well once every thread gets a few dozen; otherwise split the output columns.
  if (rows >= 32 * pool.size() || rows >= out) {
    pool.ParallelFor(rows, 16, [&](int64_t r0, int64_t r1) { Block(op, round_bf16, r0, r1, 0, out); });
  } else {
    pool.ParallelFor(out, 64, [&](int64_t c0, int64_t c1) { Block(op, round_bf16, 0, rows, c0, c1); });
  }
}

}  // namespace perceiver::cpu
