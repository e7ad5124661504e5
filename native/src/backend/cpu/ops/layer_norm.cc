// LayerNorm over the last dimension, optionally of x + residual (the sum never stored), on the
// vectorised row kernel of kernels/rows.h, threaded over rows.
#include "backend/cpu/kernels/rows.h"
#include "backend/cpu/ops/cpu_ops.h"
#include "core/engine_error.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

void LayerNorm(const LayerNormOp& op) {
  if (op.y_dtype != DType::kFloat32) throw EngineError(ErrorCode::kInternal, "cpu layer_norm: float32 outputs only");
  LayerNormRows(op.rows, op.dim, op.x, op.ldx, op.residual, op.ld_residual, nullptr, 0, op.gamma->values(), op.beta->values(),
                op.eps, op.y, op.ldy, &ThreadPool::Global());
}

}  // namespace perceiver::cpu
