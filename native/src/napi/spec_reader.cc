#include "napi/spec_reader.h"

#include <cmath>
#include <string>

#include "core/engine_error.h"

namespace perceiver {

namespace {

// Dimensions are bounded so that every product and BLAS argument fits comfortably.
constexpr int64_t kMaxDim = int64_t{1} << 24;

class SpecReader {
 public:
  SpecReader(const Napi::Object& weights, Backend& backend) : weights_(weights), backend_(backend) {}

  int64_t Dim(const Napi::Object& o, const char* key, const std::string& path, int64_t min = 1) {
    Napi::Value v = o.Get(key);
    if (!v.IsNumber()) ThrowInvalidArgument(path + "." + key + ": expected an integer");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= static_cast<double>(min) && d <= static_cast<double>(kMaxDim) && std::floor(d) == d)) {
      ThrowInvalidArgument(path + "." + key + ": expected an integer in [" + std::to_string(min) + ", 2^24]");
    }
    return static_cast<int64_t>(d);
  }

  bool Bool(const Napi::Object& o, const char* key, const std::string& path) {
    Napi::Value v = o.Get(key);
    if (!v.IsBoolean()) ThrowInvalidArgument(path + "." + key + ": expected a boolean");
    return v.As<Napi::Boolean>().Value();
  }

  Napi::Object Obj(const Napi::Object& o, const char* key, const std::string& path) {
    Napi::Value v = o.Get(key);
    if (!v.IsObject()) ThrowInvalidArgument(path + "." + key + ": expected an object");
    return v.As<Napi::Object>();
  }

  bool Present(const Napi::Object& o, const char* key) {
    Napi::Value v = o.Get(key);
    return !v.IsNull() && !v.IsUndefined();
  }

  std::string Str(const Napi::Object& o, const char* key, const std::string& path) {
    Napi::Value v = o.Get(key);
    if (!v.IsString()) ThrowInvalidArgument(path + "." + key + ": expected a string");
    return v.As<Napi::String>().Utf8Value();
  }

  // The weight named by o[key], which must hold exactly `count` float32 values.
  const float* Weight(const Napi::Object& o, const char* key, const std::string& path, int64_t count) {
    const std::string name = Str(o, key, path);
    Napi::Value v = weights_.Get(name);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
      throw EngineError(ErrorCode::kWeightMismatch, "weight \"" + name + "\" (" + path + "." + key +
                                                        ") is missing or is not a Float32Array");
    }
    Napi::Float32Array array = v.As<Napi::Float32Array>();
    if (static_cast<int64_t>(array.ElementLength()) != count) {
      throw EngineError(ErrorCode::kWeightMismatch, "weight \"" + name + "\" holds " +
                                                        std::to_string(array.ElementLength()) + " values, expected " +
                                                        std::to_string(count));
    }
    return backend_.Weight(array.Data(), static_cast<size_t>(count));
  }

  LinearWeights Linear(const Napi::Object& parent, const char* key, const std::string& parent_path, int64_t in,
                       int64_t out) {
    const std::string path = parent_path + "." + key;
    Napi::Object o = Obj(parent, key, parent_path);
    LinearWeights w;
    w.in = Dim(o, "in", path);
    w.out = Dim(o, "out", path);
    if (w.in != in || w.out != out) {
      ThrowInvalidArgument(path + ": expected a " + std::to_string(in) + " -> " + std::to_string(out) +
                           " projection, got " + std::to_string(w.in) + " -> " + std::to_string(w.out));
    }
    w.weight = Weight(o, "weight", path, in * out);
    if (Present(o, "bias")) w.bias = Weight(o, "bias", path, out);
    return w;
  }

  LayerNormWeights LayerNorm(const Napi::Object& parent, const char* key, const std::string& parent_path, int64_t dim) {
    const std::string path = parent_path + "." + key;
    Napi::Object o = Obj(parent, key, parent_path);
    LayerNormWeights w;
    w.dim = Dim(o, "dim", path);
    if (w.dim != dim) ThrowInvalidArgument(path + ".dim: expected " + std::to_string(dim));
    w.gamma = Weight(o, "weight", path, dim);
    w.beta = Weight(o, "bias", path, dim);
    return w;
  }

  PerceiverLayerSpec Layer(const Napi::Object& parent, const char* key, const std::string& parent_path) {
    const std::string path = parent_path + "." + key;
    Napi::Object o = Obj(parent, key, parent_path);
    PerceiverLayerSpec L;
    L.is_cross_attention = Bool(o, "isCrossAttention", path);
    L.num_heads = Dim(o, "numHeads", path);
    L.qk_channels = Dim(o, "qkChannels", path);
    L.v_channels = Dim(o, "vChannels", path);
    L.q_dim = Dim(o, "qDim", path);
    L.kv_dim = Dim(o, "kvDim", path);
    L.widening_factor = Dim(o, "wideningFactor", path);
    L.use_query_residual = Bool(o, "useQueryResidual", path);
    if (L.qk_channels % L.num_heads != 0 || L.v_channels % L.num_heads != 0) {
      ThrowInvalidArgument(path + ": qkChannels and vChannels must be multiples of numHeads");
    }
    // transformers projects cross-attention back to the query width, self-attention to vChannels,
    // and the MLP then works at the query width: self-attention needs vChannels == qDim.
    const int64_t out_channels = L.is_cross_attention ? L.q_dim : L.v_channels;
    if (!L.is_cross_attention && L.v_channels != L.q_dim) {
      ThrowInvalidArgument(path + ": a self-attention layer needs vChannels == qDim");
    }
    L.layernorm1 = LayerNorm(o, "layernorm1", path, L.q_dim);
    if (L.is_cross_attention) L.layernorm2 = LayerNorm(o, "layernorm2", path, L.kv_dim);
    L.query = Linear(o, "query", path, L.q_dim, L.qk_channels);
    L.key = Linear(o, "key", path, L.kv_dim, L.qk_channels);
    L.value = Linear(o, "value", path, L.kv_dim, L.v_channels);
    L.output = Linear(o, "output", path, L.v_channels, out_channels);
    L.layernorm = LayerNorm(o, "layernorm", path, L.q_dim);
    L.mlp_dense1 = Linear(o, "mlpDense1", path, L.q_dim, L.q_dim * L.widening_factor);
    L.mlp_dense2 = Linear(o, "mlpDense2", path, L.q_dim * L.widening_factor, L.q_dim);
    return L;
  }

 private:
  Napi::Object weights_;
  Backend& backend_;
};

}  // namespace

ModelSpec ReadModelSpec(const Napi::Object& js, const Napi::Object& weights, Backend& backend) {
  SpecReader r(weights, backend);
  ModelSpec spec;
  const std::string root = "spec";
  Napi::Value eps = js.Get("layerNormEps");
  if (!eps.IsNumber() || !(eps.As<Napi::Number>().DoubleValue() > 0)) ThrowInvalidArgument("spec.layerNormEps: expected a positive number");
  spec.layer_norm_eps = eps.As<Napi::Number>().FloatValue();

  // Preprocessor.
  if (!r.Present(js, "preprocessor")) ThrowInvalidArgument("spec.preprocessor: the engine needs an input preprocessor");
  Napi::Object pre = r.Obj(js, "preprocessor", root);
  const std::string pre_type = r.Str(pre, "type", root + ".preprocessor");
  if (pre_type == "text") {
    const std::string path = root + ".preprocessor";
    spec.preprocessor = PreprocessorKind::kText;
    TextPreprocessorSpec& t = spec.text;
    t.vocab_size = r.Dim(pre, "vocabSize", path);
    t.max_positions = r.Dim(pre, "maxPositionEmbeddings", path);
    t.d_model = r.Dim(pre, "dModel", path);
    t.embeddings = r.Weight(pre, "embeddings", path, t.vocab_size * t.d_model);
    t.positions = r.Weight(pre, "positionEmbeddings", path, t.max_positions * t.d_model);
    spec.input_channels = t.d_model;
  } else {
    ThrowInvalidArgument("spec.preprocessor.type: unknown preprocessor \"" + pre_type + "\"");
  }

  // Encoder.
  {
    const std::string path = root + ".encoder";
    Napi::Object e = r.Obj(js, "encoder", root);
    EncoderSpec& enc = spec.encoder;
    enc.num_latents = r.Dim(e, "numLatents", path);
    enc.d_latents = r.Dim(e, "dLatents", path);
    enc.num_blocks = r.Dim(e, "numBlocks", path);
    enc.latents = r.Weight(e, "latents", path, enc.num_latents * enc.d_latents);
    enc.cross_attention = r.Layer(e, "crossAttention", path);
    if (!enc.cross_attention.is_cross_attention || enc.cross_attention.q_dim != enc.d_latents ||
        enc.cross_attention.kv_dim != spec.input_channels) {
      ThrowInvalidArgument(path + ".crossAttention: expected a cross-attention from dLatents queries to " +
                           std::to_string(spec.input_channels) + "-channel inputs");
    }
    Napi::Value list = e.Get("selfAttends");
    if (!list.IsArray()) ThrowInvalidArgument(path + ".selfAttends: expected an array");
    Napi::Array layers = list.As<Napi::Array>();
    for (uint32_t i = 0; i < layers.Length(); ++i) {
      Napi::Object holder = Napi::Object::New(js.Env());
      holder.Set("layer", layers.Get(i));
      PerceiverLayerSpec L = r.Layer(holder, "layer", path + ".selfAttends[" + std::to_string(i) + "]");
      if (L.is_cross_attention || L.q_dim != enc.d_latents) {
        ThrowInvalidArgument(path + ".selfAttends[" + std::to_string(i) + "]: expected a self-attention on dLatents");
      }
      enc.self_attends.push_back(L);
    }
  }

  // Decoder.
  int64_t decoded_width = 0;
  if (r.Present(js, "decoder")) {
    const std::string path = root + ".decoder";
    Napi::Object d = r.Obj(js, "decoder", root);
    const std::string type = r.Str(d, "type", path);
    if (type != "basic") ThrowInvalidArgument(path + ".type: unknown decoder \"" + type + "\"");
    spec.decoder = DecoderKind::kBasic;
    BasicDecoderSpec& dec = spec.basic_decoder;
    dec.num_queries = r.Dim(d, "numQueries", path);
    dec.query_channels = r.Dim(d, "queryChannels", path);
    dec.query_positions = r.Weight(d, "queryPositions", path, dec.num_queries * dec.query_channels);
    dec.cross_attention = r.Layer(d, "crossAttention", path);
    if (!dec.cross_attention.is_cross_attention || dec.cross_attention.q_dim != dec.query_channels ||
        dec.cross_attention.kv_dim != spec.encoder.d_latents) {
      ThrowInvalidArgument(path + ".crossAttention: expected a cross-attention from the queries to the latents");
    }
    decoded_width = dec.query_channels;
    if (r.Present(d, "finalLayer")) {
      Napi::Object final_layer = r.Obj(d, "finalLayer", path);
      dec.has_final_layer = true;
      dec.final_layer = r.Linear(d, "finalLayer", path, dec.query_channels, r.Dim(final_layer, "out", path + ".finalLayer"));
      decoded_width = dec.final_layer.out;
    }
    dec.keep_first_position_only = r.Bool(d, "keepFirstPositionOnly", path);
  }

  // Postprocessor.
  if (r.Present(js, "postprocessor")) {
    const std::string path = root + ".postprocessor";
    if (spec.decoder == DecoderKind::kNone) ThrowInvalidArgument(path + ": a postprocessor needs a decoder");
    Napi::Object p = r.Obj(js, "postprocessor", root);
    const std::string type = r.Str(p, "type", path);
    if (type != "embedding") ThrowInvalidArgument(path + ".type: unknown postprocessor \"" + type + "\"");
    spec.postprocessor = PostprocessorKind::kEmbeddingDecoder;
    Napi::Object projection = r.Obj(p, "projection", path);
    spec.embedding_decoder.projection =
        r.Linear(p, "projection", path, decoded_width, r.Dim(projection, "out", path + ".projection"));
  }
  return spec;
}

}  // namespace perceiver
