// LayerNorm over the last dimension. Statistics are accumulated in double: two passes over a row
// that is already in cache cost little, and keep rows of large mean exact to float32 precision.
#include <cmath>

#include "backend/cpu/ops/cpu_ops.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

void LayerNorm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps, float* y) {
  ThreadPool::Global().ParallelFor(rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      double sum = 0.0;
      for (int64_t i = 0; i < dim; ++i) sum += xr[i];
      const double mean = sum / static_cast<double>(dim);
      double sq = 0.0;
      for (int64_t i = 0; i < dim; ++i) {
        const double d = xr[i] - mean;
        sq += d * d;
      }
      const double inv_std = 1.0 / std::sqrt(sq / static_cast<double>(dim) + static_cast<double>(eps));
      const float m = static_cast<float>(mean), s = static_cast<float>(inv_std);
      for (int64_t i = 0; i < dim; ++i) yr[i] = (xr[i] - m) * s * gamma[i] + beta[i];
    }
  });
}

}  // namespace perceiver::cpu
