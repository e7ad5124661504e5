// Linear layer through OpenBLAS sgemm. The bias is written into y first and sgemm accumulates
// onto it (beta = 1), which saves a separate pass over the output.
#include <cblas.h>

#include <cstring>

#include "backend/cpu/ops/cpu_ops.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

void Linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias, int64_t out, float* y) {
  if (rows == 0 || out == 0) return;
  float beta = 0.0f;
  if (bias != nullptr) {
    ThreadPool::Global().ParallelFor(rows, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) std::memcpy(y + r * out, bias, sizeof(float) * out);
    });
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(out),
              static_cast<int>(in), 1.0f, x, static_cast<int>(in), w, static_cast<int>(in), beta, y,
              static_cast<int>(out));
}

}  // namespace perceiver::cpu
