#include "model/postprocessors.h"

#include "core/engine_error.h"

namespace perceiver {

namespace {

// What every one does first: the linear layer over each position, [batch, n, out].
NamedOutput Project(Backend& be, const LinearWeights& projection, const std::string& name, const BackendTensor& values) {
  NamedOutput out;
  out.name = name;
  out.values = ApplyLinear(be, projection, values);
  out.shape = {values.shape[0], values.shape[1], projection.out};
  return out;
}

class EmbeddingDecoder final : public Postprocessor {
 public:
  explicit EmbeddingDecoder(LinearWeights projection) : projection_(projection) {}
  NamedOutput Run(Backend& be, const std::string& name, const BackendTensor& values) const override { return Project(be, projection_, name, values); }

 private:
  LinearWeights projection_;
};

class ClassificationPostprocessor final : public Postprocessor {
 public:
  explicit ClassificationPostprocessor(LinearWeights projection) : projection_(projection) {}
  NamedOutput Run(Backend& be, const std::string& name, const BackendTensor& values) const override {
    NamedOutput out = Project(be, projection_, name, values);
    const int64_t batch = values.shape[0], n = values.shape[1], c = projection_.out;
    BackendTensor first = AllocateTensor(be, {batch, c});
    const int64_t shape[2] = {batch, c}, src[2] = {n * c, 1}, dst[2] = {c, 1};
    RunCopy(be, first.data(), dst, out.values.data(), src, shape, 2);
    out.values = first;
    out.shape = {batch, c};
    return out;
  }

 private:
  LinearWeights projection_;
};

class AudioPostprocessor final : public Postprocessor {
 public:
  explicit AudioPostprocessor(LinearWeights projection) : projection_(projection) {}
  NamedOutput Run(Backend& be, const std::string& name, const BackendTensor& values) const override {
    NamedOutput out = Project(be, projection_, name, values);
    out.shape = {values.shape[0], values.shape[1] * projection_.out};
    return out;
  }

 private:
  LinearWeights projection_;
};

class ProjectionPostprocessor final : public Postprocessor {
 public:
  explicit ProjectionPostprocessor(LinearWeights projection) : projection_(projection) {}
  NamedOutput Run(Backend& be, const std::string& name, const BackendTensor& values) const override { return Project(be, projection_, name, values); }

 private:
  LinearWeights projection_;
};

}  // namespace

std::unique_ptr<Postprocessor> MakeEmbeddingDecoder(LinearWeights projection) { return std::make_unique<EmbeddingDecoder>(projection); }
std::unique_ptr<Postprocessor> MakeClassificationPostprocessor(LinearWeights projection) {
  return std::make_unique<ClassificationPostprocessor>(projection);
}
std::unique_ptr<Postprocessor> MakeAudioPostprocessor(LinearWeights projection) { return std::make_unique<AudioPostprocessor>(projection); }
std::unique_ptr<Postprocessor> MakeProjectionPostprocessor(LinearWeights projection) { return std::make_unique<ProjectionPostprocessor>(projection); }

std::vector<NamedOutput> MultimodalPostprocessor::Run(Backend& be, const Decoded& decoded) const {
  const BackendTensor& all = decoded.values;
  const int64_t batch = all.shape[0], rows = all.shape[1], c = all.shape[2];
  std::vector<NamedOutput> outputs;
  int64_t row0 = 0;
  for (const auto& [name, size] : decoded.modality_sizes) {
    BackendTensor part = AllocateTensor(be, {batch, size, c});
    const int64_t shape[3] = {batch, size, c}, src[3] = {rows * c, c, 1}, dst[3] = {size * c, c, 1};
    RunCopy(be, part.data(), dst, all.data() + row0 * c, src, shape, 3);
    row0 += size;
    for (const auto& [post_name, post] : modalities_) {
      if (post_name == name) outputs.push_back(post->Run(be, name, part));
    }
  }
  return outputs;
}

}  // namespace perceiver
