// The CUDA side of kernel_check_hooks.h. The flash attention goes through the backend itself
// (cuda_backend.cc), so the check covers the key-length and mask uploads the models use; the
// others launch on the legacy default stream after the backend's Synchronize (the backend's
// stream does not order against it) and wait for it, which a check can afford. Host data goes up
// through the backend (CopyFromHost: its pinned staging), never by a pageable copy.
#include "backend/cuda/kernel_check_hooks.h"

#include <cuda_runtime_api.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/kernels.h"
#include "core/engine_error.h"

namespace perceiver::cuda_checks {

void BiasGelu(Backend& backend, const float* acc, int64_t rows, int64_t cols, const float* bias, bool gelu, const float* residual,
              int64_t residual_period, DType y_dtype, void* y) {
  backend.Synchronize();
  cuda::BiasGeluArgs a;
  a.acc = acc;
  a.ld_acc = cols;
  a.rows = rows;
  a.cols = cols;
  a.bias = bias;
  a.gelu = gelu;
  a.residual = residual;
  a.ld_residual = cols;
  a.residual_period = residual_period;
  a.y = y;
  a.ldy = cols;
  a.y_dtype = y_dtype;
  cuda::LaunchBiasGelu(a, nullptr);
  CUDA_CHECK(cudaStreamSynchronize(nullptr));
}

void FourierFeatures(Backend& backend, const std::vector<int64_t>& index_dims, const std::vector<int64_t>& max_resolution,
                     int64_t bands, bool concat_pos, bool sine_only, const std::vector<int64_t>& points, float* out) {
  if (index_dims.empty() || index_dims.size() > static_cast<size_t>(kMaxFourierDims) || max_resolution.size() != index_dims.size()) {
    ThrowInvalidArgument("fourier features index_dims, max_resolution", "1 to " + std::to_string(kMaxFourierDims) + " index dimensions, one resolution each",
                         std::to_string(index_dims.size()) + " dimensions, " + std::to_string(max_resolution.size()) + " resolutions");
  }
  cuda::FourierFeaturesArgs a;
  a.dims = static_cast<int>(index_dims.size());
  a.n = 1;
  for (size_t k = 0; k < index_dims.size(); ++k) {
    a.index_dims[k] = index_dims[k];
    a.max_resolution[k] = max_resolution[k];
    a.n *= index_dims[k];
  }
  a.bands = bands;
  a.concat_pos = concat_pos;
  a.sine_only = sine_only;
  a.out = out;
  std::unique_ptr<BackendBuffer> device_points;
  if (!points.empty()) {
    device_points = backend.Allocate(points.size() * 2);  // int64 = two float slots
    // Through the backend's pinned staging (no pageable copy), on its stream: Synchronize below.
    backend.CopyFromHost(device_points->data(), reinterpret_cast<const float*>(points.data()), points.size() * 2);
    a.points = reinterpret_cast<const int64_t*>(device_points->data());
    a.n = static_cast<int64_t>(points.size());
  }
  backend.Synchronize();
  cuda::LaunchFourierFeatures(a, nullptr);
  CUDA_CHECK(cudaStreamSynchronize(nullptr));
}

}  // namespace perceiver::cuda_checks
