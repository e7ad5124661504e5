#include "backend/cpu/ops/cpu_ops.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

void AddInPlace(float* y, const float* x, int64_t n) {
  ThreadPool::Global().ParallelFor(n, 65536, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] += x[i];
  });
}

}  // namespace perceiver::cpu
