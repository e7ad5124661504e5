// Linear layers on weights packed at load, with the epilogue fused into the product (kernels/
// gemm.h): bias, exact GELU and the residual are applied to each output tile while it is in
// registers, so a layer is one pass over its output. The kernels thread over the pool.
//
// bfloat16 models: the weights were packed in bf16 and the kernels round each activation row to
// bf16 before multiplying (backend.h's RoundsProductInputs), accumulating in float32.
#include <algorithm>

#include "backend/cpu/ops/cpu_ops.h"
#include "core/engine_error.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

void Linear(const LinearOp& op) {
  if (op.rows == 0 || op.weight->rows() == 0) return;
  if (op.y_dtype != DType::kFloat32) throw EngineError(ErrorCode::kInternal, "cpu linear: float32 outputs only");
  const PackedMatrix& w = Cpu(op.weight).packed();
  GemmEpilogue epilogue;
  epilogue.bias = op.bias ? op.bias->values() : nullptr;
  epilogue.gelu = op.gelu;
  epilogue.residual = op.residual;
  epilogue.ld_residual = op.ld_residual;
  if (op.residual == nullptr || op.residual_period == 0 || op.residual_period >= op.rows) {
    GemmPacked(op.rows, op.x, op.ldx, w, op.y, op.ldy, epilogue, &ThreadPool::Global());
    return;
  }
  // A residual shared by every batch item (batch-independent queries): one product per item.
  for (int64_t r0 = 0; r0 < op.rows; r0 += op.residual_period) {
    const int64_t rows = std::min(op.residual_period, op.rows - r0);
    GemmPacked(rows, op.x + r0 * op.ldx, op.ldx, w, op.y + r0 * op.ldy, op.ldy, epilogue, &ThreadPool::Global());
  }
}

}  // namespace perceiver::cpu
