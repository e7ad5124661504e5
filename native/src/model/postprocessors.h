// Output postprocessors (transformers' PerceiverEmbeddingDecoder, PerceiverClassificationPostprocessor,
// PerceiverAudioPostprocessor, PerceiverProjectionPostprocessor, PerceiverMultimodalPostprocessor).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/decoders.h"

namespace perceiver {

struct NamedOutput {
  std::string name;  // "" for a single output, else the modality
  BackendTensor values;
  std::vector<int64_t> shape;
};

class Postprocessor {
 public:
  virtual ~Postprocessor() = default;
  // values [batch, points, channels] of one modality -> the final logits and their shape.
  virtual NamedOutput Run(Backend& backend, const std::string& name, const BackendTensor& values) const = 0;
};

enum class PostprocessorKind { kLinear, kFirstPosition, kAudio };

// All the single-modality postprocessors are a linear layer and a reshape.
std::unique_ptr<Postprocessor> MakeLinearPostprocessor(LinearWeights projection, PostprocessorKind kind);

// Splits the decoded rows by modality (in the decoder's order) and applies each one's postprocessor.
std::vector<NamedOutput> RunMultimodalPostprocessor(Backend& backend,
                                                    const std::vector<std::pair<std::string, std::unique_ptr<Postprocessor>>>& modalities,
                                                    const Decoded& decoded);

}  // namespace perceiver
