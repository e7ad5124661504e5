// Token embedding lookup plus learned absolute positions (PerceiverTextPreprocessor).
#include <cstring>

#include "backend/cpu/ops/cpu_ops.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

void Embedding(const EmbeddingOp& op) {
  const float* table = op.table->values();
  const float* positions = op.positions ? op.positions->values() : nullptr;
  const int64_t dim = op.table->cols(), seq = op.seq;
  // ids were range-checked by the caller.
  ThreadPool::Global().ParallelFor(op.batch * seq, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* row = table + static_cast<int64_t>(op.ids[t]) * dim;
      float* o = op.out + t * dim;
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
