#include "model/position_encoding.h"

#include <algorithm>
#include <cmath>

#include "core/engine_error.h"

namespace perceiver {

namespace {

// The cubic convolution kernel torch uses for bicubic interpolation (a = -0.75).
void CubicWeights(float t, float w[4]) {
  constexpr float a = -0.75f;
  auto near = [&](float x) { return ((a + 2) * x - (a + 3)) * x * x + 1; };
  auto far = [&](float x) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; };
  w[0] = far(t + 1);
  w[1] = near(t);
  w[2] = near(1 - t);
  w[3] = far(2 - t);
}

}  // namespace

std::vector<float> BicubicResize(const float* src, int64_t in_h, int64_t in_w, int64_t c, int64_t out_h,
                                 int64_t out_w) {
  std::vector<float> out(static_cast<size_t>(out_h * out_w * c), 0.0f);
  const float sy = static_cast<float>(in_h) / static_cast<float>(out_h);
  const float sx = static_cast<float>(in_w) / static_cast<float>(out_w);
  auto clamp = [](int64_t v, int64_t hi) { return std::max<int64_t>(0, std::min(v, hi - 1)); };
  for (int64_t y = 0; y < out_h; ++y) {
    const float fy = (static_cast<float>(y) + 0.5f) * sy - 0.5f;
    const int64_t iy = static_cast<int64_t>(std::floor(fy));
    float wy[4];
    CubicWeights(fy - static_cast<float>(iy), wy);
    for (int64_t x = 0; x < out_w; ++x) {
      const float fx = (static_cast<float>(x) + 0.5f) * sx - 0.5f;
      const int64_t ix = static_cast<int64_t>(std::floor(fx));
      float wx[4];
      CubicWeights(fx - static_cast<float>(ix), wx);
      float* o = out.data() + (y * out_w + x) * c;
      for (int ty = 0; ty < 4; ++ty) {
        const int64_t yy = clamp(iy - 1 + ty, in_h);
        for (int tx = 0; tx < 4; ++tx) {
          const int64_t xx = clamp(ix - 1 + tx, in_w);
          const float wgt = wy[ty] * wx[tx];
          const float* s = src + (yy * in_w + xx) * c;
          for (int64_t ch = 0; ch < c; ++ch) o[ch] += wgt * s[ch];
        }
      }
    }
  }
  return out;
}

std::shared_ptr<BackendBuffer> TensorCache::Find(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  entries_.splice(entries_.begin(), entries_, it->second);
  return it->second->second;
}

std::shared_ptr<BackendBuffer> TensorCache::Insert(const std::string& key, std::shared_ptr<BackendBuffer> value) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it != index_.end()) return it->second->second;  // another forward got there first
  entries_.emplace_front(key, std::move(value));
  index_[key] = entries_.begin();
  while (entries_.size() > capacity_) {
    index_.erase(entries_.back().first);
    entries_.pop_back();
  }
  return entries_.front().second;
}

std::shared_ptr<BackendBuffer> Upload(Backend& backend, const std::vector<float>& host) {
  std::shared_ptr<BackendBuffer> buffer = backend.Allocate(host.size());
  backend.CopyFromHost(buffer->data(), host.data(), host.size());
  return buffer;
}

BackendTensor TrainablePositionEncoding::ForGrid(Backend& be, const std::vector<int64_t>& index_dims, bool interpolate,
                                                 const std::string& argument) const {
  const int64_t rows = Product(index_dims);
  BackendTensor raw;
  raw.shape = {rows, channels_};
  if (rows == num_positions_) {
    raw.buffer = std::shared_ptr<BackendBuffer>(be.Allocate(static_cast<size_t>(rows * channels_)));
    RunContiguousCopy(be, raw.buffer->data(), table_->values(), rows * channels_);
    return raw;
  }
  const int64_t side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(num_positions_))));
  if (!interpolate || index_dims.size() != 2 || side * side != num_positions_) {
    ThrowInvalidArgument(argument,
                         std::to_string(num_positions_) + " positions, the model's learned position table (pass interpolatePosEncoding to resize it to another image size)",
                         std::to_string(rows) + " positions");
  }
  std::vector<float> table(static_cast<size_t>(num_positions_ * channels_));
  be.CopyToHost(table.data(), table_->values(), table.size());
  raw.buffer = Upload(be, BicubicResize(table.data(), side, side, channels_, index_dims[0], index_dims[1]));
  return raw;
}

BackendTensor FourierPositionEncoding::ForGrid(Backend& be, const std::vector<int64_t>& index_dims, bool,
                                               const std::string& argument) const {
  if (index_dims.size() != spec_.max_resolution.size()) {
    ThrowInvalidArgument(argument, "a " + std::to_string(spec_.max_resolution.size()) + "-D grid (the Fourier features' dimensions)",
                         "a " + std::to_string(index_dims.size()) + "-D grid");
  }
  const int64_t rows = Product(index_dims);
  const int64_t channels = spec_.OutputChannels();
  BackendTensor raw;
  raw.shape = {rows, channels};
  if (index_dims.size() <= static_cast<size_t>(kMaxFourierDims)) {  // made by the backend, where they are used
    raw.buffer = std::shared_ptr<BackendBuffer>(be.Allocate(static_cast<size_t>(rows * channels)));
    FourierFeaturesOp features;
    features.dims = static_cast<int>(index_dims.size());
    std::copy(index_dims.begin(), index_dims.end(), features.index_dims);
    std::copy(spec_.max_resolution.begin(), spec_.max_resolution.end(), features.max_resolution);
    features.bands = spec_.num_bands;
    features.concat_pos = spec_.concat_pos;
    features.sine_only = spec_.sine_only;
    features.out = raw.buffer->data();
    be.Run(features);
    return raw;
  }
  std::vector<float> host(static_cast<size_t>(rows * channels));
  FourierFeatures(GridPositions(index_dims).data(), rows, spec_, host.data());
  raw.buffer = Upload(be, host);
  return raw;
}

BackendTensor BuiltPositionEncoding::ForGrid(Backend& be, TensorCache& cache, const std::vector<int64_t>& index_dims, bool interpolate,
                                             const std::string& argument) const {
  std::string key = key_ + (interpolate ? "|i|" : "|g|");
  for (int64_t d : index_dims) key += std::to_string(d) + ",";
  BackendTensor out;
  out.shape = {Product(index_dims), output_channels()};
  if ((out.buffer = cache.Find(key))) return out;
  BackendTensor raw = encoding_->ForGrid(be, index_dims, interpolate, argument);
  if (projection_.present()) raw = ApplyLinear(be, projection_, raw);
  out.buffer = cache.Insert(key, raw.buffer);
  return out;
}

}  // namespace perceiver
