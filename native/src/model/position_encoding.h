// Position encodings (transformers' PerceiverTrainablePositionEncoding and
// PerceiverFourierPositionEncoding, as lib/modeling/position_encodings.ts names them, and
// BuiltPositionEncoding: one of them plus build_position_encoding's optional projection), computed
// once per shape and cached on the backend. The Fourier features themselves, and the positions they
// are computed of, are core/fourier_features.h.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "core/fourier_features.h"
#include "model/layers.h"

namespace perceiver {


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

// transformers' PerceiverAbstractPositionEncoding: [prod(index_dims), channels] for a grid.
class PositionEncoding {
 public:
  virtual ~PositionEncoding() = default;
  virtual int64_t output_channels() const = 0;
  // A new backend tensor [prod(index_dims), output_channels()]; `argument` names the input in errors.
  virtual BackendTensor ForGrid(Backend& backend, const std::vector<int64_t>& index_dims, bool interpolate,
                                const std::string& argument) const = 0;
};

// transformers' PerceiverTrainablePositionEncoding: a learned [num_positions, channels] table. The
// grid must have num_positions points, unless interpolate is set and the grid is 2-D: then the
// (square) table is resized bicubically, as transformers' interpolate_pos_encoding does.
class TrainablePositionEncoding final : public PositionEncoding {
 public:
  TrainablePositionEncoding(WeightRef table, int64_t num_positions, int64_t channels)
      : table_(std::move(table)), num_positions_(num_positions), channels_(channels) {}
  int64_t output_channels() const override { return channels_; }
  BackendTensor ForGrid(Backend& backend, const std::vector<int64_t>& index_dims, bool interpolate,
                        const std::string& argument) const override;

 private:
  WeightRef table_;  // kValues [num_positions, channels] (copied to the host to be resized)
  int64_t num_positions_, channels_;
};

// transformers' PerceiverFourierPositionEncoding: sin/cos features of the grid's linspace positions.
class FourierPositionEncoding final : public PositionEncoding {
 public:
  explicit FourierPositionEncoding(FourierSpec spec) : spec_(std::move(spec)) {}
  int64_t output_channels() const override { return spec_.OutputChannels(); }
  // The grid must have as many dimensions as max_resolution.
  BackendTensor ForGrid(Backend& backend, const std::vector<int64_t>& index_dims, bool interpolate,
                        const std::string& argument) const override;

 private:
  FourierSpec spec_;
};

// As lib/modeling/position_encodings.ts's BuiltPositionEncoding (transformers'
// build_position_encoding): an encoding and its optional projection, cached per grid under
// cache_key (input-independent, so computed once per grid).
class BuiltPositionEncoding {
 public:
  BuiltPositionEncoding(std::unique_ptr<PositionEncoding> encoding, LinearWeights projection, std::string cache_key)
      : encoding_(std::move(encoding)), projection_(projection), key_(std::move(cache_key)) {}
  // Channels after the optional projection.
  int64_t output_channels() const { return projection_.present() ? projection_.out : encoding_->output_channels(); }
  // [prod(index_dims), output_channels()], from the cache when this grid was seen before.
  BackendTensor ForGrid(Backend& backend, TensorCache& cache, const std::vector<int64_t>& index_dims, bool interpolate,
                        const std::string& argument) const;

 private:
  std::unique_ptr<PositionEncoding> encoding_;
  LinearWeights projection_;  // optional
  std::string key_;
};

}  // namespace perceiver
