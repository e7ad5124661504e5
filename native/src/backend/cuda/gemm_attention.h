// Attention as tensor-core matrix products: the scores of one chunk of queries x one chunk of keys
// at a time come from cuBLAS, an online softmax carries the row max and sum across key chunks
// (flash-attention's recurrence at chunk granularity), and P V accumulates into the output in
// cuBLAS too. Memory is bounded by the chunk, never by queries x keys.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <memory>

#include "backend/backend.h"
#include "backend/cuda/cublas_library.h"

namespace perceiver::cuda {

struct GemmAttentionContext {
  cublasHandle_t blas = nullptr;
  cudaStream_t stream = nullptr;
  Precision precision = Precision::kFloat32;
  // Device scratch from the backend's pool (stream-ordered reuse, see cuda_backend.cc).
  std::function<std::unique_ptr<BackendBuffer>(size_t floats)> allocate;
  size_t score_budget_bytes = size_t{256} << 20;  // one chunk's scores (+ probabilities)
};

// args.key_mask must already be in device memory.
void GemmAttention(const AttentionArgs& args, const GemmAttentionContext& context);

}  // namespace perceiver::cuda
