// Position encodings, computed on the host once per shape and cached on the backend.
//
// Fourier features follow transformers' generate_fourier_features exactly, including its float32
// arithmetic (torch.linspace's formula, float32 products, sin/cos of float32 arguments): at
// 112 frequency bands an argument near 350 has a float32 ulp of 3e-5, so computing it in double
// would move the features by more than the parity bar allows.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"

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

// Bicubic resize of a [in_h, in_w, c] grid to [out_h, out_w, c], as torch's
// interpolate(mode='bicubic', align_corners=False) does (a = -0.75, edge-clamped taps).
std::vector<float> BicubicResize(const float* src, int64_t in_h, int64_t in_w, int64_t c, int64_t out_h, int64_t out_w);

// Input-independent tensors keyed by what they depend on (shape, options), kept on the backend.
// Bounded: the least recently used entries go first; an entry in use stays alive through its
// shared_ptr.
class TensorCache {
 public:
  explicit TensorCache(size_t capacity = 32) : capacity_(capacity) {}
  std::shared_ptr<BackendBuffer> Find(const std::string& key);
  std::shared_ptr<BackendBuffer> Insert(const std::string& key, std::shared_ptr<BackendBuffer> value);

 private:
  size_t capacity_;
  std::mutex mutex_;
  std::list<std::pair<std::string, std::shared_ptr<BackendBuffer>>> entries_;  // most recent first
  std::unordered_map<std::string, decltype(entries_)::iterator> index_;
};

// Uploads host floats into a new backend buffer.
std::shared_ptr<BackendBuffer> Upload(Backend& backend, const std::vector<float>& host);

}  // namespace perceiver
