#include "core/fourier_features.h"

#include <cmath>

namespace perceiver {

int64_t FourierSpec::OutputChannels() const {
  const int64_t d = static_cast<int64_t>(max_resolution.size());
  return d * num_bands * (sine_only ? 1 : 2) + (concat_pos ? d : 0);
}

float TorchLinspace(float start, float end, int64_t steps, int64_t i) {
  if (steps == 1) return start;
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int64_t halfway = steps / 2;
  return i < halfway ? start + step * static_cast<float>(i) : end - step * static_cast<float>(steps - i - 1);
}

void FourierFeatures(const float* pos, int64_t n, const FourierSpec& spec, float* out) {
  const int64_t d = static_cast<int64_t>(spec.max_resolution.size());
  const int64_t bands = spec.num_bands;
  std::vector<float> freq(static_cast<size_t>(d * bands));
  for (int64_t k = 0; k < d; ++k) {
    const float top = static_cast<float>(spec.max_resolution[k]) / 2.0f;
    for (int64_t b = 0; b < bands; ++b) freq[k * bands + b] = TorchLinspace(1.0f, top, bands, b);
  }
  const float pi = static_cast<float>(M_PI);
  const int64_t channels = spec.OutputChannels();
  const int64_t trig = d * bands;
  for (int64_t i = 0; i < n; ++i) {
    float* o = out + i * channels;
    const float* p = pos + i * d;
    if (spec.concat_pos) {
      for (int64_t k = 0; k < d; ++k) *o++ = p[k];
    }
    for (int64_t k = 0; k < d; ++k) {
      for (int64_t b = 0; b < bands; ++b) {
        const float arg = pi * (p[k] * freq[k * bands + b]);
        o[k * bands + b] = std::sin(arg);
        if (!spec.sine_only) o[trig + k * bands + b] = std::cos(arg);
      }
    }
  }
}

std::vector<float> GridPositions(const std::vector<int64_t>& index_dims) {
  const int64_t d = static_cast<int64_t>(index_dims.size());
  int64_t n = 1;
  for (int64_t v : index_dims) n *= v;
  std::vector<float> pos(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i;
    for (int64_t k = d - 1; k >= 0; --k) {
      const int64_t coord = rem % index_dims[k];
      rem /= index_dims[k];
      pos[i * d + k] = TorchLinspace(-1.0f, 1.0f, index_dims[k], coord);
    }
  }
  return pos;
}

std::vector<float> PointPositions(const std::vector<int64_t>& indices, const std::vector<int64_t>& index_dims) {
  const int64_t d = static_cast<int64_t>(index_dims.size());
  std::vector<float> pos(indices.size() * static_cast<size_t>(d));
  for (size_t i = 0; i < indices.size(); ++i) {
    int64_t rem = indices[i];
    for (int64_t k = d - 1; k >= 0; --k) {
      const int64_t coord = rem % index_dims[k];
      rem /= index_dims[k];
      pos[i * d + k] = -1.0f + static_cast<float>(2 * coord) / static_cast<float>(index_dims[k]);
    }
  }
  return pos;
}

}  // namespace perceiver
