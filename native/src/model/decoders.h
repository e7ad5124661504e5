// Decoders (transformers' PerceiverBasicDecoder and the decoders built on it): output queries
// cross-attend to the latents. Queries come from a learned table, from Fourier features of the
// output grid (optionally at a subset of its points), or from the preprocessed inputs (optical
// flow); the multimodal decoder pads and concatenates each modality's queries.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/layers.h"
#include "model/position_encoding.h"
#include "model/preprocessors.h"
#include "model/request.h"

namespace perceiver {

struct DecodeContext {
  Backend& backend;
  TensorCache& cache;
  const DecodeRequest& request;
  const EncoderInputs* inputs;  // kept from encoding when queries come from the inputs
  int64_t batch;
  float eps;
  std::vector<BackendTensor>* attentions;  // decoder cross-attention weights, when asked for
};

// Decoder queries: per item ([batch, points, channels]) or, when they do not depend on the input,
// one block [points, channels] shared by every item (cache_key set when the block is the same on
// every call, so the layer keeps its projection; see LayerQueries).
struct DecoderQueries {
  BackendTensor per_item;
  const float* shared = nullptr;
  int64_t rows = 0, channels = 0;
  std::shared_ptr<BackendBuffer> keep;  // holds the shared block's memory when it is not a weight
  std::string cache_key;
  bool is_shared() const { return shared != nullptr; }
};

// The queries of one output modality.
class QueryBuilder {
 public:
  virtual ~QueryBuilder() = default;
  virtual int64_t channels() const = 0;
  // Total number of output points (what subsampled indices index into).
  virtual int64_t num_points(const DecodeContext& ctx) const = 0;
  // points: the requested flat indices, or null for every point.
  virtual DecoderQueries Build(DecodeContext& ctx, const std::vector<int64_t>* points) const = 0;
};

std::unique_ptr<QueryBuilder> MakeTrainableQueries(WeightRef table, int64_t positions, int64_t channels);
std::unique_ptr<QueryBuilder> MakeFourierQueries(FourierSpec spec, std::vector<int64_t> output_index_dims, std::string cache_key);
std::unique_ptr<QueryBuilder> MakeInputQueries(int64_t channels);

struct Decoded {
  BackendTensor values;  // [batch, points, channels]
  std::vector<std::pair<std::string, int64_t>> modality_sizes;
  std::vector<int64_t> output_shape;  // the shape transformers returns (before any postprocessor)
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual Decoded Run(DecodeContext& ctx, const BackendTensor& latents) const = 0;
  // Modality names the request's points may name ("" for a single-modality decoder).
  virtual std::vector<std::string> modalities() const { return {""}; }
};

// The cross-attention and final projection shared by every query-based decoder.
struct CrossAttentionDecoderSpec {
  PerceiverLayerSpec layer;
  LinearWeights final_layer;  // optional
};


struct MultimodalDecoderModality {
  std::string name;
  std::unique_ptr<QueryBuilder> queries;
  WeightRef padding;  // kValues [1, channels - queries channels]
};

// One class per transformers decoder, as in lib/modeling/decoders.ts: PerceiverBasicDecoder, and
// the three built on one (which hold it as `decoder`, as transformers does).
std::unique_ptr<Decoder> MakeBasicDecoder(CrossAttentionDecoderSpec cross, std::unique_ptr<QueryBuilder> queries);
// The first position of the basic decoder's output, [batch, channels].
std::unique_ptr<Decoder> MakeClassificationDecoder(std::unique_ptr<Decoder> decoder);
// The basic decoder's output divided by rescale_factor, as an [batch, H, W, channels] field
// (output_image_shape [H, W]) unless points were subsampled.
std::unique_ptr<Decoder> MakeOpticalFlowDecoder(std::unique_ptr<Decoder> decoder, float rescale_factor, std::vector<int64_t> output_image_shape);
// The basic decoder's output as [B, T, H, W, channels] (output_shape [B, T, H, W]) unless points were subsampled.
std::unique_ptr<Decoder> MakeBasicVideoAutoencodingDecoder(std::unique_ptr<Decoder> decoder, std::vector<int64_t> output_shape);
std::unique_ptr<Decoder> MakeMultimodalDecoder(CrossAttentionDecoderSpec cross, std::vector<MultimodalDecoderModality> modalities,
                                               int64_t query_channels);
std::unique_ptr<Decoder> MakeProjectionDecoder(LinearWeights classifier);

}  // namespace perceiver
