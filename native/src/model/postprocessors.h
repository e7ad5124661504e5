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

// One class per transformers postprocessor, as in lib/modeling/postprocessors.ts; each is a linear
// layer and a reshape.
// PerceiverEmbeddingDecoder: [batch, n, vocab] (the projection holds the tied embeddings).
std::unique_ptr<Postprocessor> MakeEmbeddingDecoder(LinearWeights projection);
// PerceiverClassificationPostprocessor: the first position, [batch, labels].
std::unique_ptr<Postprocessor> MakeClassificationPostprocessor(LinearWeights projection);
// PerceiverAudioPostprocessor: patches of samples joined into one waveform, [batch, n * samples].
std::unique_ptr<Postprocessor> MakeAudioPostprocessor(LinearWeights projection);
// PerceiverProjectionPostprocessor: [batch, n, out].
std::unique_ptr<Postprocessor> MakeProjectionPostprocessor(LinearWeights projection);

// PerceiverMultimodalPostprocessor: splits the decoded rows by modality (in the decoder's order)
// and applies each one's postprocessor.
class MultimodalPostprocessor {
 public:
  using Modalities = std::vector<std::pair<std::string, std::unique_ptr<Postprocessor>>>;
  explicit MultimodalPostprocessor(Modalities modalities) : modalities_(std::move(modalities)) {}
  std::vector<NamedOutput> Run(Backend& backend, const Decoded& decoded) const;

 private:
  Modalities modalities_;
};

}  // namespace perceiver
