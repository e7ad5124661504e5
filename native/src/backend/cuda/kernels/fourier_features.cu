// Fourier position features generated on the GPU with the float32 arithmetic of the CPU path
// (model/position_encoding.cc FourierFeatures over GridPositions or PointPositions): every
// product, quotient and sum is an explicitly rounded float32 operation (nvcc would otherwise fuse
// a * b + c into one FMA and round once), so the sin / cos arguments are the CPU's bits; sin and
// cos are evaluated in double and rounded once to float, within an ulp of glibc's sinf / cosf. A
// 1920x1080 flow pair's features (2 million pixels x 258 channels) are thus made where they are
// used instead of computed on the host and uploaded.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

namespace {

// torch.linspace(start, end, steps)[i] in float32 (TorchLinspace).
__device__ float Linspace(float start, float end, int64_t steps, int64_t i) {
  if (steps == 1) return start;
  const float step = __fdiv_rn(__fsub_rn(end, start), static_cast<float>(steps - 1));
  const int64_t halfway = steps / 2;
  return i < halfway ? __fadd_rn(start, __fmul_rn(step, static_cast<float>(i)))
                     : __fsub_rn(end, __fmul_rn(step, static_cast<float>(steps - i - 1)));
}

// Coordinate k of point i: the grid's linspace(-1, 1) or a flat index's -1 + 2 coord / dim.
__device__ float Position(const FourierFeaturesArgs& a, int64_t i, int k) {
  if (a.positions) return a.positions[i * a.dims + k];
  const int64_t point = a.points ? a.points[i] : i;
  int64_t stride = 1;
  for (int j = a.dims - 1; j > k; --j) stride *= a.index_dims[j];
  const int64_t coord = (point / stride) % a.index_dims[k];
  if (a.points) return __fadd_rn(-1.0f, __fdiv_rn(static_cast<float>(2 * coord), static_cast<float>(a.index_dims[k])));
  return Linspace(-1.0f, 1.0f, a.index_dims[k], coord);
}

__global__ void FourierFeaturesKernel(FourierFeaturesArgs a) {
  const int64_t pos_channels = a.concat_pos ? a.dims : 0, trig = static_cast<int64_t>(a.dims) * a.bands;
  const int64_t channels = pos_channels + trig * (a.sine_only ? 1 : 2), n = a.n * channels;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n; e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / channels, ch = e % channels;
    float value;
    if (ch < pos_channels) {
      value = Position(a, i, static_cast<int>(ch));
    } else {
      const int64_t t = (ch - pos_channels) % trig;
      const int k = static_cast<int>(t / a.bands);
      const int64_t band = t % a.bands;
      const float freq = Linspace(1.0f, __fdiv_rn(static_cast<float>(a.max_resolution[k]), 2.0f), a.bands, band);
      const float arg = __fmul_rn(3.14159265358979323846f, __fmul_rn(Position(a, i, k), freq));
      value = static_cast<float>(ch - pos_channels < trig ? sin(static_cast<double>(arg)) : cos(static_cast<double>(arg)));
    }
    a.out[i * channels + ch] = value;
  }
}

}  // namespace

void LaunchFourierFeatures(const FourierFeaturesArgs& a, cudaStream_t stream) {
  if (a.dims < 1 || a.dims > kMaxFourierDims) ThrowInvalidArgument("fourier features index_dims", "1 to " + std::to_string(kMaxFourierDims) + " index dimensions", std::to_string(a.dims));
  const int64_t channels = (a.concat_pos ? a.dims : 0) + static_cast<int64_t>(a.dims) * a.bands * (a.sine_only ? 1 : 2);
  if (a.n == 0 || channels == 0) return;
  FourierFeaturesKernel<<<GridFor(a.n * channels), kThreads, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace perceiver::cuda
