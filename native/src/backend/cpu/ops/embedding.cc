// Token embedding lookup plus learned absolute positions (PerceiverTextPreprocessor).
#include <cstring>

#include "backend/cpu/ops/cpu_ops.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

void EmbeddingLookup(const int32_t* ids, int64_t batch, int64_t seq, const float* table, int64_t vocab,
                     const float* positions, int64_t dim, float* out) {
  (void)vocab;  // ids were range-checked by the caller
  ThreadPool::Global().ParallelFor(batch * seq, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* row = table + static_cast<int64_t>(ids[t]) * dim;
      float* o = out + t * dim;
      if (positions == nullptr) {
        std::memcpy(o, row, sizeof(float) * dim);
      } else {
        const float* p = positions + (t % seq) * dim;
        for (int64_t i = 0; i < dim; ++i) o[i] = row[i] + p[i];
      }
    }
  });
}

}  // namespace perceiver::cpu
