#include "model/postprocessors.h"

#include "core/engine_error.h"

namespace perceiver {

namespace {

class LinearPostprocessor final : public Postprocessor {
 public:
  LinearPostprocessor(LinearWeights projection, PostprocessorKind kind) : projection_(projection), kind_(kind) {}

  NamedOutput Run(Backend& be, const std::string& name, const BackendTensor& values) const override {
    const int64_t batch = values.shape[0], n = values.shape[1];
    NamedOutput out;
    out.name = name;
    out.values = ApplyLinear(be, projection_, values);
    const int64_t c = projection_.out;
    switch (kind_) {
      case PostprocessorKind::kLinear:
        out.shape = {batch, n, c};
        break;
      case PostprocessorKind::kAudio:  // patches of samples back into one waveform per item
        out.shape = {batch, n * c};
        break;
      case PostprocessorKind::kFirstPosition: {
        BackendTensor first = AllocateTensor(be, {batch, c});
        const int64_t shape[2] = {batch, c}, src[2] = {n * c, 1}, dst[2] = {c, 1};
        RunCopy(be, first.data(), dst, out.values.data(), src, shape, 2);
        out.values = first;
        out.shape = {batch, c};
        break;
      }
    }
    return out;
  }

 private:
  LinearWeights projection_;
  PostprocessorKind kind_;
};

}  // namespace

std::unique_ptr<Postprocessor> MakeLinearPostprocessor(LinearWeights projection, PostprocessorKind kind) {
  return std::make_unique<LinearPostprocessor>(projection, kind);
}

std::vector<NamedOutput> RunMultimodalPostprocessor(
    Backend& be, const std::vector<std::pair<std::string, std::unique_ptr<Postprocessor>>>& modalities, const Decoded& decoded) {
  const BackendTensor& all = decoded.values;
  const int64_t batch = all.shape[0], rows = all.shape[1], c = all.shape[2];
  std::vector<NamedOutput> outputs;
  int64_t row0 = 0;
  for (const auto& [name, size] : decoded.modality_sizes) {
    BackendTensor part = AllocateTensor(be, {batch, size, c});
    const int64_t shape[3] = {batch, size, c}, src[3] = {rows * c, c, 1}, dst[3] = {size * c, c, 1};
    RunCopy(be, part.data(), dst, all.data() + row0 * c, src, shape, 3);
    row0 += size;
    for (const auto& [post_name, post] : modalities) {
      if (post_name == name) outputs.push_back(post->Run(be, name, part));
    }
  }
  return outputs;
}

}  // namespace perceiver
