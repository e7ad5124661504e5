// Linear layer through OpenBLAS sgemm. OpenBLAS runs single-threaded here (see cpu_backend.cc):
// the product is split into row blocks (or, for a few rows, column blocks) across the engine's
// own thread pool, so one pool serves every op and no BLAS threads spin between calls. The bias
// is written into y first and sgemm accumulates onto it (beta = 1), saving a pass over the output.
#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/ops/cpu_ops.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

namespace {

// y[r0:r1, c0:c1] = x[r0:r1] @ w[c0:c1]^T (+ bias[c0:c1]).
void LinearBlock(const float* x, int64_t in, const float* w, const float* bias, int64_t out, float* y, int64_t r0,
                 int64_t r1, int64_t c0, int64_t c1) {
  float beta = 0.0f;
  if (bias != nullptr) {
    for (int64_t r = r0; r < r1; ++r) std::memcpy(y + r * out + c0, bias + c0, sizeof(float) * (c1 - c0));
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(r1 - r0), static_cast<int>(c1 - c0),
              static_cast<int>(in), 1.0f, x + r0 * in, static_cast<int>(in), w + c0 * in, static_cast<int>(in), beta,
              y + r0 * out + c0, static_cast<int>(out));
}

}  // namespace

void Linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias, int64_t out, float* y) {
  if (rows == 0 || out == 0) return;
  ThreadPool& pool = ThreadPool::Global();
  // Rows split well once every thread gets a few dozen; otherwise split the output columns.
  if (rows >= 32 * pool.size() || rows >= out) {
    pool.ParallelFor(rows, 16, [&](int64_t r0, int64_t r1) { LinearBlock(x, in, w, bias, out, y, r0, r1, 0, out); });
  } else {
    pool.ParallelFor(out, 64, [&](int64_t c0, int64_t c1) { LinearBlock(x, in, w, bias, out, y, 0, rows, c0, c1); });
  }
}

}  // namespace perceiver::cpu
