// Input preprocessors (transformers' PerceiverTextPreprocessor, PerceiverImagePreprocessor,
// PerceiverAudioPreprocessor, PerceiverOneHotPreprocessor, PerceiverMultimodalPreprocessor): each
// turns its modality's raw input into the [batch, rows, channels] sequence the encoder reads.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/layers.h"
#include "model/position_encoding.h"
#include "model/request.h"

namespace perceiver {

struct EncoderInputs {
  BackendTensor sequence;  // [batch, rows, channels]
  // Rows per modality, in transformers' (sorted) order; one unnamed entry for a single modality.
  std::vector<std::pair<std::string, int64_t>> modality_sizes;
  std::vector<int64_t> index_dims;  // the grid the rows flatten (images, audio)
};

struct PreprocessContext {
  Backend& backend;
  TensorCache& cache;
  const EncodeRequest& request;
};

class Preprocessor {
 public:
  virtual ~Preprocessor() = default;
  virtual int64_t channels() const = 0;
  // Validates input (throwing an invalid-argument EngineError naming `name`) and runs.
  virtual EncoderInputs Run(PreprocessContext& ctx, const std::string& name, const InputArray& input) = 0;
};

struct TextPreprocessorSpec {
  WeightRef embeddings;  // kValues [vocab, d_model]
  WeightRef positions;   // kValues [max_positions, d_model]
  int64_t vocab_size = 0, max_positions = 0, d_model = 0;
};

struct ImagePreprocessorSpec {
  enum class Prep { kConv1x1, kConv, kPixels, kPatches } prep = Prep::kConv;
  int64_t in_channels = 3, out_channels = 64, spatial_downsample = 1, temporal_downsample = 1;
  LinearWeights conv;  // conv / conv1x1 weights [out, in * k * k], bias optional
  int64_t conv_kernel = 1;
  WeightRef bn_scale, bn_shift;  // inference BatchNorm folded to an affine map, kValues [1, out_channels]
  LinearWeights conv_after_patching;  // optional
  bool concat_pos = true;             // else added
  int64_t feature_channels = 0;       // channels before the position encoding joins them
  int64_t num_channels = 0;
};

struct AudioPreprocessorSpec {
  int64_t samples_per_patch = 96;
  bool concat_pos = true;
  int64_t num_channels = 0;
};

struct MultimodalModality {
  std::string name;
  std::unique_ptr<Preprocessor> preprocessor;
  WeightRef padding;  // kValues [1, channels - preprocessor channels]
  WeightRef mask;     // kValues [1, channels] or null
  double mask_probability = 0.0;
};

std::unique_ptr<Preprocessor> MakeTextPreprocessor(TextPreprocessorSpec spec);
std::unique_ptr<Preprocessor> MakeImagePreprocessor(ImagePreprocessorSpec spec, BuiltPositionEncoding position);
std::unique_ptr<Preprocessor> MakeAudioPreprocessor(AudioPreprocessorSpec spec, BuiltPositionEncoding position);
std::unique_ptr<Preprocessor> MakeOneHotPreprocessor(int64_t num_labels);
std::unique_ptr<Preprocessor> MakeIdentityPreprocessor(int64_t channels);
std::unique_ptr<Preprocessor> MakeMultimodalPreprocessor(std::vector<MultimodalModality> modalities, int64_t channels);

}  // namespace perceiver
