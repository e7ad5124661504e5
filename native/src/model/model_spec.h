// The Perceiver graph's description, resolved to backend weight pointers. The TypeScript layer
// (lib/modeling/*) builds it from a Hugging Face config and checkpoint, mirroring transformers'
// module tree; napi/spec_reader.cc validates it and turns it into these structs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace perceiver {

struct LinearWeights {
  const float* weight = nullptr;  // [out, in]
  const float* bias = nullptr;    // [out] or null
  int64_t in = 0, out = 0;
};

struct LayerNormWeights {
  const float* gamma = nullptr;
  const float* beta = nullptr;
  int64_t dim = 0;
};

// transformers' PerceiverLayer: (cross- or self-) attention with its output projection and
// optional query residual, then LayerNorm + MLP with a residual.
struct PerceiverLayerSpec {
  bool is_cross_attention = false;
  int64_t num_heads = 1, qk_channels = 0, v_channels = 0, q_dim = 0, kv_dim = 0, widening_factor = 1;
  bool use_query_residual = true;
  LayerNormWeights layernorm1;  // on the queries
  LayerNormWeights layernorm2;  // on the keys/values (cross-attention only)
  LinearWeights query, key, value, output;
  LayerNormWeights layernorm;   // before the MLP
  LinearWeights mlp_dense1, mlp_dense2;
};

enum class PreprocessorKind { kNone, kText };

// PerceiverTextPreprocessor: token embeddings plus learned absolute positions.
struct TextPreprocessorSpec {
  const float* embeddings = nullptr;  // [vocab, d_model]
  const float* positions = nullptr;   // [max_positions, d_model]
  int64_t vocab_size = 0, max_positions = 0, d_model = 0;
};

struct EncoderSpec {
  const float* latents = nullptr;  // [num_latents, d_latents]
  int64_t num_latents = 0, d_latents = 0, num_blocks = 1;
  PerceiverLayerSpec cross_attention;
  std::vector<PerceiverLayerSpec> self_attends;  // shared by every block
};

enum class DecoderKind { kNone, kBasic };

// PerceiverBasicDecoder with trainable output positions (PerceiverClassificationDecoder is this
// plus keeping the first output position).
struct BasicDecoderSpec {
  const float* query_positions = nullptr;  // [num_queries, query_channels]
  int64_t num_queries = 0, query_channels = 0;
  PerceiverLayerSpec cross_attention;
  bool has_final_layer = false;
  LinearWeights final_layer;
  bool keep_first_position_only = false;
};

enum class PostprocessorKind { kNone, kEmbeddingDecoder };

// PerceiverEmbeddingDecoder: logits = hidden @ embeddings^T + bias (weights tied to the input
// embeddings, as transformers does).
struct EmbeddingDecoderSpec {
  LinearWeights projection;
};

struct ModelSpec {
  float layer_norm_eps = 1e-5f;  // transformers never passes config.layer_norm_eps on
  PreprocessorKind preprocessor = PreprocessorKind::kNone;
  TextPreprocessorSpec text;
  int64_t input_channels = 0;  // width of what the encoder cross-attends to
  EncoderSpec encoder;
  DecoderKind decoder = DecoderKind::kNone;
  BasicDecoderSpec basic_decoder;
  PostprocessorKind postprocessor = PostprocessorKind::kNone;
  EmbeddingDecoderSpec embedding_decoder;
};

}  // namespace perceiver
