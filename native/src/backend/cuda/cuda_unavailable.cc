// Built instead of the CUDA backend when no nvcc was found at build time (or
// PERCEIVER_NO_CUDA=1): the backend reports itself as not compiled and why.
#include "backend/backend.h"
#include "backend/cuda/kernel_check_hooks.h"
#include "core/engine_error.h"

namespace perceiver {

CudaStatus ProbeCuda() {
  CudaStatus s;
  s.reason = "this build of perceiver-io was compiled without CUDA (no nvcc at build time); rebuild with the CUDA toolkit "
             "on PATH (npm rebuild perceiver-io) to use a GPU";
  return s;
}

std::unique_ptr<Backend> CreateCudaBackend(int, Precision) {
  throw EngineError(ErrorCode::kBackendUnavailable, ProbeCuda().reason);
}

void CudaMemoryInfo(int, size_t* free_bytes, size_t* total_bytes) { *free_bytes = *total_bytes = 0; }

// Unreachable without a CUDA backend (CreateCudaBackend throws first); kept so the checks link.
void cuda_checks::FlashAttention(Backend&, const AttentionOp&, DType, int) {
  throw EngineError(ErrorCode::kBackendUnavailable, ProbeCuda().reason);
}
void cuda_checks::BiasGelu(Backend&, const float*, int64_t, int64_t, const float*, bool, const float*, int64_t, DType, void*) {
  throw EngineError(ErrorCode::kBackendUnavailable, ProbeCuda().reason);
}
void cuda_checks::FourierFeatures(Backend&, const std::vector<int64_t>&, const std::vector<int64_t>&, int64_t, bool, bool,
                                  const std::vector<int64_t>&, float*) {
  throw EngineError(ErrorCode::kBackendUnavailable, ProbeCuda().reason);
}

}  // namespace perceiver
