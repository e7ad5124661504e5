// Fourier position features and the positions they are computed of: the model's definition
// (transformers' generate_fourier_features, build_linear_positions and the subsampled decoder
// queries' positions), shared by the model (model/position_encoding.h, model/decoders.cc) and by
// the CPU backend's FourierFeaturesOp, which is also the reference the CUDA kernel is checked
// against.
//
// They follow transformers exactly, including its float32 arithmetic (torch.linspace's formula,
// float32 products, sin/cos of float32 arguments): at 112 frequency bands an argument near 350 has
// a float32 ulp of 3e-5, so computing it in double would move the features by more than the
// parity bar allows.
#pragma once

#include <cstdint>
#include <vector>

namespace perceiver {

struct FourierSpec {
  int64_t num_bands = 0;
  std::vector<int64_t> max_resolution;  // one entry per index dimension
  bool concat_pos = true;
  bool sine_only = false;
  int64_t OutputChannels() const;
};

// torch.linspace(start, end, steps) in float32, element i.
float TorchLinspace(float start, float end, int64_t steps, int64_t i);

// Features [n, spec.OutputChannels()] for positions pos [n, d] (d = max_resolution.size()).
void FourierFeatures(const float* pos, int64_t n, const FourierSpec& spec, float* out);

// transformers' build_linear_positions: a linspace(-1, 1) grid over index_dims, [prod(dims), d].
std::vector<float> GridPositions(const std::vector<int64_t>& index_dims);

// Positions of flat indices into index_dims, as transformers' subsampled decoder queries compute
// them: -1 + 2 * coordinate / dim (not the grid's linspace), [n, d].
std::vector<float> PointPositions(const std::vector<int64_t>& indices, const std::vector<int64_t>& index_dims);

}  // namespace perceiver
