// Entry points for napi/kernel_check.cc into CUDA kernels that no Backend op selects by itself:
// the flash attention with a forced key-range split or a chosen dtype, the product epilogue, the
// Fourier features. Plain C++ (a CPU-only build links the stubs in cuda_unavailable.cc). Every
// pointer is device memory from `backend`, which must come from CreateCudaBackend; each call
// returns once its kernels have finished.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"

namespace perceiver::cuda_checks {

// op through the tensor-core flash attention in dtype (bfloat16 or float16), its key range split
// force_splits ways (0: the plan's own choice).
void FlashAttention(Backend& backend, const AttentionOp& op, DType dtype, int force_splits);

// y = gelu?(acc + bias) + residual (rows [r % period or r]), written as y_dtype (y holds that type).
void BiasGelu(Backend& backend, const float* acc, int64_t rows, int64_t cols, const float* bias, bool gelu, const float* residual,
              int64_t residual_period, DType y_dtype, void* y);

// Fourier features of the linspace grid over index_dims (points empty) or of flat indices into it
// (host indices, uploaded here), into out [n, channels].
void FourierFeatures(Backend& backend, const std::vector<int64_t>& index_dims, const std::vector<int64_t>& max_resolution,
                     int64_t bands, bool concat_pos, bool sine_only, const std::vector<int64_t>& points, float* out);

}  // namespace perceiver::cuda_checks
