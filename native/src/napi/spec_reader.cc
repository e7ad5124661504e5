#include "napi/spec_reader.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "core/engine_error.h"
#include "napi/js_errors.h"
#include "napi/spec_nodes.h"

namespace perceiver {

namespace {

// Builds the engine's modules from the spec's structs (napi/spec_nodes.h, which already checked
// each field's type and range). What is checked here is what the fields mean together and what
// memory safety needs: widths that agree, weights of the sizes the kernels will read. Each rule
// is written once; TypeScript resolved the configuration (defaults, derived channel counts).
class ModelBuilder {
 public:
  ModelBuilder(const Napi::Object& weights, WeightLoadList& list) : weights_(weights), list_(list) {}

  // The weight `w` names, which must hold exactly rows x cols values: a Float32Array (host memory,
  // read on the loading thread while the caller keeps it alive) or a checkpoint file range
  // { fd, offset, dtype, length } (lib/io/safetensors.ts validated it against the file's header;
  // the loading thread re-checks what it reads).
  SourceWeight Host(const spec::WeightName& w, int64_t rows, int64_t cols) {
    Napi::Value v = weights_.Get(w.name);
    SourceWeight h;
    h.rows = rows;
    h.cols = cols;
    h.name = w.name;
    if (v.IsObject() && !v.IsTypedArray() && v.As<Napi::Object>().Has("fd")) {
      h.file = ReadFileRange(v.As<Napi::Object>(), w.name, rows * cols);
      return h;
    }
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
      ThrowWeightMismatch(w.name, "a Float32Array or a checkpoint file range (for " + w.field + ")", DescribeJs(v));
    }
    Napi::Float32Array array = v.As<Napi::Float32Array>();
    bool detached = false;
    napi_is_detached_arraybuffer(array.Env(), array.ArrayBuffer(), &detached);
    if (detached) ThrowWeightMismatch(w.name, std::to_string(rows * cols) + " values", "a detached ArrayBuffer");
    if (static_cast<int64_t>(array.ElementLength()) != rows * cols) {
      ThrowWeightMismatch(w.name, std::to_string(rows * cols) + " values", std::to_string(array.ElementLength()));
    }
    h.data = array.Data();
    return h;
  }

  static std::shared_ptr<const WeightFileRange> ReadFileRange(const Napi::Object& o, const std::string& name, int64_t count) {
    const std::string what = "weight \"" + name + "\" (a checkpoint file range)";  // the argument of its fields' errors
    auto integer = [&](const char* key, double max) {
      Napi::Value v = o.Get(key);
      const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1.0;
      if (!(d >= 0.0 && d <= max && d == static_cast<double>(static_cast<int64_t>(d)))) {
        ThrowInvalidArgument(what + "." + key, "an integer in [0, " + std::to_string(static_cast<int64_t>(max)) + "]", DescribeJs(v));
      }
      return static_cast<int64_t>(d);
    };
    auto range = std::make_shared<WeightFileRange>();
    range->fd = static_cast<int>(integer("fd", 2147483647.0));
    range->offset = static_cast<uint64_t>(integer("offset", 9007199254740991.0));
    range->count = integer("length", 9007199254740991.0);
    Napi::Value dtype = o.Get("dtype");
    const std::string d = dtype.IsString() ? dtype.As<Napi::String>().Utf8Value() : "";
    if (d == "float32") range->dtype = FileDType::kFloat32;
    else if (d == "float16") range->dtype = FileDType::kFloat16;
    else if (d == "bfloat16") range->dtype = FileDType::kBfloat16;
    else if (d == "float64") range->dtype = FileDType::kFloat64;
    else ThrowInvalidArgument(what + ".dtype", "float32, float16, bfloat16 or float64", DescribeJs(dtype));
    if (range->count != count) ThrowWeightMismatch(name, std::to_string(count) + " values", std::to_string(range->count));
    return range;
  }

  // A weight read element-wise (biases, LayerNorm, tables), loaded into backend memory.
  WeightRef Values(const spec::WeightName& w, int64_t rows, int64_t cols) {
    SourceWeight h = Host(w, rows, cols);
    return list_.Add({h}, h.name, WeightUse::kValues);
  }

  // A linear layer's weights, checked to map `in` to `out` features (0: any).
  struct HostLinear {
    SourceWeight weight, bias;  // bias.present() false when absent
    int64_t in = 0, out = 0;
  };
  HostLinear Host(const spec::LinearSpec& l, const std::string& path, int64_t in, int64_t out) {
    if ((in && l.in != in) || (out && l.out != out)) {
      ThrowInvalidArgument(path, "a " + (in ? std::to_string(in) : std::string("any")) + " -> " + (out ? std::to_string(out) : "any") + " projection",
                           std::to_string(l.in) + " -> " + std::to_string(l.out));
    }
    HostLinear h;
    h.in = l.in;
    h.out = l.out;
    h.weight = Host(l.weight, l.out, l.in);
    if (l.bias.present()) h.bias = Host(l.bias, 1, l.out);
    return h;
  }

  LinearWeights Load(const HostLinear& h) {
    LinearWeights w;
    w.in = h.in;
    w.out = h.out;
    w.weight = list_.Add({h.weight}, h.weight.name, WeightUse::kMatrix);
    if (h.bias.present()) w.bias = list_.Add({h.bias}, h.bias.name, WeightUse::kValues);
    return w;
  }

  LinearWeights Linear(const spec::LinearSpec& l, const std::string& path, int64_t in, int64_t out) { return Load(Host(l, path, in, out)); }
  LinearWeights Linear(const std::shared_ptr<spec::LinearSpec>& l, const std::string& path, int64_t in, int64_t out) {
    return l ? Linear(*l, path, in, out) : LinearWeights();
  }

  // Projections that read the same input, fused into one product: weights stacked by rows (and
  // biases likewise; a missing bias is zeros when another part has one).
  LinearWeights LoadFused(const std::vector<const HostLinear*>& parts) {
    LinearWeights w;
    w.in = parts[0]->in;
    std::vector<SourceWeight> weights, biases;
    bool any_bias = false;
    std::string name;
    for (const HostLinear* p : parts) {
      w.out += p->out;
      weights.push_back(p->weight);
      // Biases stack as [out, 1] columns (null data: zeros); loaded as one [1, total] row.
      SourceWeight bias = p->bias;
      bias.rows = p->out;
      bias.cols = 1;
      biases.push_back(std::move(bias));
      any_bias = any_bias || p->bias.present();
      name += (name.empty() ? "" : "+") + p->weight.name;
    }
    w.weight = list_.Add(std::move(weights), name, WeightUse::kMatrix);
    if (any_bias) w.bias = list_.Add(std::move(biases), name + " (bias)", WeightUse::kValues);
    return w;
  }

  LayerNormWeights LayerNorm(const spec::LayerNormSpec& l, const std::string& path, int64_t dim) {
    if (l.dim != dim) ThrowInvalidArgument(path + ".dim", std::to_string(dim), std::to_string(l.dim));
    LayerNormWeights w;
    w.dim = dim;
    w.gamma = Values(l.weight, 1, dim);
    w.beta = Values(l.bias, 1, dim);
    return w;
  }

  PerceiverLayerSpec Layer(const spec::PerceiverLayerSpec& s, const std::string& path) {
    PerceiverLayerSpec L;
    L.is_cross_attention = s.is_cross_attention;
    L.num_heads = s.num_heads;
    // Channels are declared per head (each at most 2^24: the products fit), so they split evenly
    // by construction; TypeScript holds the divisibility rule (lib/modeling/layers.ts).
    L.qk_channels = s.num_heads * s.qk_channels_per_head;
    L.v_channels = s.num_heads * s.v_channels_per_head;
    L.q_dim = s.q_dim;
    L.kv_dim = s.kv_dim;
    L.widening_factor = s.widening_factor;
    L.use_query_residual = s.use_query_residual;
    // transformers projects cross-attention back to the query width, self-attention to vChannels,
    // and the MLP then works at the query width: self-attention needs vChannels == qDim.
    const int64_t out_channels = L.is_cross_attention ? L.q_dim : L.v_channels;
    if (!L.is_cross_attention && L.v_channels != L.q_dim) {
      ThrowInvalidArgument(path, "vChannels == qDim in a self-attention layer", std::to_string(L.v_channels) + " and " + std::to_string(L.q_dim));
    }
    L.layernorm1 = LayerNorm(s.layernorm1, path + ".layernorm1", L.q_dim);
    if (L.is_cross_attention) {
      if (!s.layernorm2) ThrowInvalidArgument(path + ".layernorm2", "a LayerNorm of the keys and values (a cross-attention layer)", "null");
      L.layernorm2 = LayerNorm(*s.layernorm2, path + ".layernorm2", L.kv_dim);
    }
    const HostLinear query = Host(s.query, path + ".query", L.q_dim, L.qk_channels);
    const HostLinear key = Host(s.key, path + ".key", L.kv_dim, L.qk_channels);
    const HostLinear value = Host(s.value, path + ".value", L.kv_dim, L.v_channels);
    if (L.is_cross_attention) {
      L.query = Load(query);
      L.kv = LoadFused({&key, &value});
      if (L.num_heads == 1) {
        // For the folded form of single-head cross-attention (layers.cc): W_k^T and W_v apart.
        L.key_transposed.in = L.qk_channels;
        L.key_transposed.out = L.kv_dim;
        L.key_transposed.weight = list_.Add({key.weight}, key.weight.name + " (transposed)", WeightUse::kMatrix, true);
        L.value = Load(value);
      }
    } else {
      L.qkv = LoadFused({&query, &key, &value});
    }
    L.output = Linear(s.output, path + ".output", L.v_channels, out_channels);
    L.layernorm = LayerNorm(s.layernorm, path + ".layernorm", L.q_dim);
    L.mlp_dense1 = Linear(s.mlp_dense1, path + ".mlpDense1", L.q_dim, L.q_dim * L.widening_factor);
    L.mlp_dense2 = Linear(s.mlp_dense2, path + ".mlpDense2", L.q_dim * L.widening_factor, L.q_dim);
    return L;
  }

  static FourierSpec Fourier(const spec::FourierSpec& s) {
    FourierSpec f;
    f.num_bands = s.num_bands;
    f.max_resolution = s.max_resolution;
    f.concat_pos = s.concat_pos;
    f.sine_only = s.sine_only;
    return f;
  }

  BuiltPositionEncoding Position(const spec::PositionEncodingSpec& s, const std::string& path) {
    std::unique_ptr<PositionEncoding> encoding;
    std::shared_ptr<spec::LinearSpec> projection;
    if (s.type == spec::PositionEncodingSpec::Type::kTrainable) {
      const spec::TrainablePositionEncodingSpec& t = *s.trainable_position_encoding;
      encoding = std::make_unique<TrainablePositionEncoding>(Values(t.weight, t.num_positions, t.num_channels), t.num_positions, t.num_channels);
      projection = t.projection;
    } else {
      encoding = std::make_unique<FourierPositionEncoding>(Fourier(s.fourier_position_encoding->fourier));
      projection = s.fourier_position_encoding->projection;
    }
    // The encoding's own channels (Fourier: counted by the code that writes them) feed the projection.
    LinearWeights projected = Linear(projection, path + ".projection", encoding->output_channels(), 0);
    return BuiltPositionEncoding(std::move(encoding), projected, path + "#" + std::to_string(next_key_++));
  }

  // Features and positions joined must fill the numChannels the spec declares (the encoder's
  // weights are sized from it), and added they must be as wide as each other (the sum reads both).
  // One rule and one wording for every preprocessor that joins positions: TypeScript computes
  // numChannels and does not check it again.
  static void CheckJoinedChannels(const std::string& path, bool concat, int64_t features, int64_t positions, int64_t declared) {
    if (declared != (concat ? features + positions : positions) || (!concat && features != positions)) {
      ThrowInvalidArgument(path + ".numChannels",
                           std::string(concat ? "features + position channels (" : "features == position channels (") + std::to_string(features) +
                               " and " + std::to_string(positions) + ")",
                           std::to_string(declared));
    }
  }

  std::unique_ptr<Preprocessor> BuildPreprocessor(const spec::PreprocessorSpec& s, const std::string& path, int64_t* channels) {
    using Type = spec::PreprocessorSpec::Type;
    switch (s.type) {
      case Type::kText: {
        const spec::TextPreprocessorSpec& t = *s.text_preprocessor;
        TextPreprocessorSpec out;
        out.vocab_size = t.vocab_size;
        out.max_positions = t.max_position_embeddings;
        out.d_model = t.d_model;
        out.embeddings = Values(t.embeddings, out.vocab_size, out.d_model);
        out.positions = Values(t.position_embeddings, out.max_positions, out.d_model);
        *channels = out.d_model;
        return MakeTextPreprocessor(out);
      }
      case Type::kImage: return BuildImagePreprocessor(*s.image_preprocessor, path, channels);
      case Type::kAudio: {
        const spec::AudioPreprocessorSpec& a = *s.audio_preprocessor;
        AudioPreprocessorSpec out;
        out.samples_per_patch = a.samples_per_patch;
        BuiltPositionEncoding position = Position(a.position, path + ".position");
        out.concat_pos = a.concat_or_add == spec::AudioPreprocessorSpec::ConcatOrAdd::kConcat;
        out.num_channels = a.num_channels;
        CheckJoinedChannels(path, out.concat_pos, out.samples_per_patch, position.output_channels(), out.num_channels);
        *channels = out.num_channels;
        return MakeAudioPreprocessor(out, std::move(position));
      }
      case Type::kNone:
        *channels = s.identity_preprocessor->num_channels;
        return MakeIdentityPreprocessor(*channels);
      case Type::kOnehot:
        *channels = s.one_hot_preprocessor->num_labels;
        return MakeOneHotPreprocessor(*channels);
      case Type::kMultimodal: {
        const spec::MultimodalPreprocessorSpec& m = *s.multimodal_preprocessor;
        const int64_t c = m.num_channels;
        if (m.modalities.empty()) ThrowInvalidArgument(path + ".modalities", "at least one", "none");
        std::vector<MultimodalModality> modalities;
        for (size_t i = 0; i < m.modalities.size(); ++i) {
          const spec::MultimodalPreprocessorModalitySpec& ms = m.modalities[i];
          const std::string mpath = path + ".modalities[" + std::to_string(i) + "]";
          CheckModalityName(ms.name, i ? &m.modalities[i - 1].name : nullptr, mpath);
          MultimodalModality mod;
          mod.name = ms.name;
          int64_t cm = 0;
          mod.preprocessor = BuildPreprocessor(ms.preprocessor, mpath + ".preprocessor", &cm);
          if (cm > c) ThrowInvalidArgument(mpath, "at most the common width " + std::to_string(c), std::to_string(cm) + " channels");
          if (cm < c) mod.padding = Values(Required(ms.padding, mpath + ".padding"), 1, c - cm);
          if (ms.mask.present()) {
            mod.mask = Values(ms.mask, 1, c);
            mod.mask_probability = ms.mask_probability;
          }
          modalities.push_back(std::move(mod));
        }
        *channels = c;
        return MakeMultimodalPreprocessor(std::move(modalities), c);
      }
    }
    throw EngineError(ErrorCode::kInternal, "spec: a preprocessor type without a builder");
  }

  std::unique_ptr<Preprocessor> BuildImagePreprocessor(const spec::ImagePreprocessorSpec& i, const std::string& path, int64_t* channels) {
    using Prep = spec::ImagePreprocessorSpec::PrepType;
    ImagePreprocessorSpec s;
    s.in_channels = i.in_channels;
    s.out_channels = i.out_channels;
    s.spatial_downsample = i.spatial_downsample;
    s.temporal_downsample = i.temporal_downsample;
    if (i.prep_type == Prep::kConv1x1 || i.prep_type == Prep::kConv) {
      const bool stem = i.prep_type == Prep::kConv;
      s.prep = stem ? ImagePreprocessorSpec::Prep::kConv : ImagePreprocessorSpec::Prep::kConv1x1;
      s.conv_kernel = stem ? 7 : 1;
      if (!i.conv) ThrowInvalidArgument(path + ".conv", "a convolution's weights", "null");
      s.conv = Linear(*i.conv, path + ".conv", s.in_channels * s.conv_kernel * s.conv_kernel, s.out_channels);
      if (stem) {
        // transformers builds the same stem (7x7 / 2 conv, 3x3 / 2 pool: 4x in space) for any
        // power of 4, the published checkpoint's 1 included, and none that downsamples time
        // (lib/modeling/preprocessors.ts refuses the others; the stem reads images only).
        if (!i.batchnorm) ThrowInvalidArgument(path + ".batchnorm", "the conv stem's BatchNorm", "null");
        const spec::BatchNormSpec& bn = *i.batchnorm;
        const SourceWeight gamma = Host(bn.weight, 1, s.out_channels);
        const SourceWeight beta = Host(bn.bias, 1, s.out_channels);
        const SourceWeight mean = Host(bn.running_mean, 1, s.out_channels);
        const SourceWeight var = Host(bn.running_var, 1, s.out_channels);
        const double eps = bn.eps;
        // Folded on the loading thread, where the statistics are read. A non-finite running
        // statistic makes a non-finite scale or shift: refused by name.
        const int64_t c = s.out_channels;
        s.bn_scale = list_.AddComputed({gamma, var}, gamma.name + " / " + var.name, WeightUse::kValues, 1, c,
                                       [eps, c](const std::vector<const float*>& v) {
                                         std::vector<float> scale(static_cast<size_t>(c));
                                         for (int64_t k = 0; k < c; ++k) scale[k] = static_cast<float>(v[0][k] / std::sqrt(static_cast<double>(v[1][k]) + eps));
                                         return scale;
                                       });
        s.bn_shift = list_.AddComputed({gamma, beta, mean, var}, beta.name + " / " + mean.name, WeightUse::kValues, 1, c,
                                       [eps, c](const std::vector<const float*>& v) {
                                         std::vector<float> shift(static_cast<size_t>(c));
                                         for (int64_t k = 0; k < c; ++k) {
                                           const double scale = v[0][k] / std::sqrt(static_cast<double>(v[3][k]) + eps);
                                           shift[k] = static_cast<float>(v[1][k] - v[2][k] * scale);
                                         }
                                         return shift;
                                       });
      }
    } else if (i.prep_type == Prep::kPixels) {
      s.prep = ImagePreprocessorSpec::Prep::kPixels;
      if (s.spatial_downsample != 1) ThrowInvalidArgument(path + ".spatialDownsample", "1 (pixels are not downsampled)", std::to_string(s.spatial_downsample));
    } else {
      s.prep = ImagePreprocessorSpec::Prep::kPatches;
      s.conv_after_patching = Linear(i.conv_after_patching, path + ".convAfterPatching", 0, s.out_channels);
    }
    BuiltPositionEncoding position = Position(i.position, path + ".position");
    s.concat_pos = i.concat_or_add == spec::ImagePreprocessorSpec::ConcatOrAdd::kConcat;
    s.num_channels = i.num_channels;
    s.feature_channels = i.feature_channels;
    CheckJoinedChannels(path, s.concat_pos, s.feature_channels, position.output_channels(), s.num_channels);
    *channels = s.num_channels;
    return MakeImagePreprocessor(std::move(s), std::move(position));
  }

  std::unique_ptr<QueryBuilder> Queries(const spec::QuerySpec& s, const std::string& path, int64_t input_channels) {
    switch (s.type) {
      case spec::QuerySpec::Type::kTrainable: {
        const spec::TrainableQuerySpec& t = *s.trainable_query;
        return MakeTrainableQueries(Values(t.weight, t.num_positions, t.num_channels), t.num_positions, t.num_channels);
      }
      case spec::QuerySpec::Type::kFourier: {
        const spec::FourierQuerySpec& f = *s.fourier_query;
        if (f.output_index_dims.size() != f.fourier.max_resolution.size()) {
          ThrowInvalidArgument(path + ".outputIndexDims", "the rank of maxResolution, " + std::to_string(f.fourier.max_resolution.size()), std::to_string(f.output_index_dims.size()));
        }
        return MakeFourierQueries(Fourier(f.fourier), f.output_index_dims, path + "#" + std::to_string(next_key_++));
      }
      case spec::QuerySpec::Type::kInputs: return MakeInputQueries(input_channels);
    }
    throw EngineError(ErrorCode::kInternal, "spec: a query type without a builder");
  }

  CrossAttentionDecoderSpec Cross(const spec::PerceiverLayerSpec& layer, const std::shared_ptr<spec::LinearSpec>& final_layer, const std::string& path,
                                  int64_t query_channels, int64_t d_latents) {
    CrossAttentionDecoderSpec c;
    c.layer = Layer(layer, path + ".crossAttention");
    CheckCrossAttention(c.layer, path + ".crossAttention", query_channels, d_latents, "-channel queries to the " + std::to_string(d_latents) + "-channel latents");
    c.final_layer = Linear(final_layer, path + ".finalLayer", query_channels, 0);
    return c;
  }

  std::unique_ptr<Decoder> BuildDecoder(const spec::DecoderSpec& s, const std::string& path, int64_t d_latents, int64_t input_channels,
                                              bool* queries_inputs, int64_t* out_channels, std::vector<std::string>* modalities) {
    using Type = spec::DecoderSpec::Type;
    *queries_inputs = false;
    switch (s.type) {
      case Type::kBasic: return BuildBasicDecoder(*s.basic_decoder, path, d_latents, input_channels, queries_inputs, out_channels, modalities);
      case Type::kClassification:
        return MakeClassificationDecoder(
            BuildBasicDecoder(s.classification_decoder->decoder, path + ".decoder", d_latents, input_channels, queries_inputs, out_channels, modalities));
      case Type::kOpticalFlow: {
        const spec::OpticalFlowDecoderSpec& f = *s.optical_flow_decoder;
        std::unique_ptr<Decoder> decoder = BuildBasicDecoder(f.decoder, path + ".decoder", d_latents, input_channels, queries_inputs, out_channels, modalities);
        return MakeOpticalFlowDecoder(std::move(decoder), static_cast<float>(f.rescale_factor), Rank(f.output_image_shape, path + ".outputImageShape", 2, "[height, width]"));
      }
      case Type::kBasicVideoAutoencoding: {
        const spec::BasicVideoAutoencodingDecoderSpec& v = *s.basic_video_autoencoding_decoder;
        std::unique_ptr<Decoder> decoder = BuildBasicDecoder(v.decoder, path + ".decoder", d_latents, input_channels, queries_inputs, out_channels, modalities);
        return MakeBasicVideoAutoencodingDecoder(std::move(decoder), Rank(v.output_shape, path + ".outputShape", 4, "[batch, frames, height, width]"));
      }
      case Type::kMultimodal: {
        const spec::MultimodalDecoderSpec& m = *s.multimodal_decoder;
        const int64_t c = m.query_channels;
        if (m.modalities.empty()) ThrowInvalidArgument(path + ".modalities", "at least one", "none");
        std::vector<MultimodalDecoderModality> mods;
        modalities->clear();
        for (size_t i = 0; i < m.modalities.size(); ++i) {
          const spec::MultimodalDecoderModalitySpec& ms = m.modalities[i];
          const std::string mpath = path + ".modalities[" + std::to_string(i) + "]";
          CheckModalityName(ms.name, i ? &m.modalities[i - 1].name : nullptr, mpath);
          MultimodalDecoderModality mod;
          mod.name = ms.name;
          mod.queries = Queries(ms.queries, mpath + ".queries", input_channels);
          const int64_t cm = mod.queries->channels();
          if (cm > c) ThrowInvalidArgument(mpath + ".queries", "at most the common width " + std::to_string(c), std::to_string(cm) + " channels");
          if (cm < c) mod.padding = Values(Required(ms.padding, mpath + ".padding"), 1, c - cm);
          modalities->push_back(mod.name);
          mods.push_back(std::move(mod));
        }
        CrossAttentionDecoderSpec cross = Cross(m.cross_attention, m.final_layer, path, c, d_latents);
        *out_channels = cross.final_layer.present() ? cross.final_layer.out : c;
        return MakeMultimodalDecoder(std::move(cross), std::move(mods), c);
      }
      case Type::kProjection: {
        LinearWeights classifier = Linear(s.projection_decoder->classifier, path + ".classifier", d_latents, 0);
        *out_channels = classifier.out;
        modalities->assign({""});
        return MakeProjectionDecoder(classifier);
      }
    }
    throw EngineError(ErrorCode::kInternal, "spec: a decoder type without a builder");
  }

  std::unique_ptr<Postprocessor> BuildPostprocessor(const spec::PostprocessorSpec& s, const std::string& path, int64_t in) {
    using Type = spec::PostprocessorSpec::Type;
    const std::string projection = path + ".projection";
    switch (s.type) {
      case Type::kEmbeddingDecoder: return MakeEmbeddingDecoder(Linear(s.embedding_decoder->projection, projection, in, 0));
      case Type::kClassification: return MakeClassificationPostprocessor(Linear(s.classification_postprocessor->projection, projection, in, 0));
      case Type::kAudio: return MakeAudioPostprocessor(Linear(s.audio_postprocessor->projection, projection, in, 0));
      case Type::kProjection: return MakeProjectionPostprocessor(Linear(s.projection_postprocessor->projection, projection, in, 0));
      case Type::kMultimodal: break;
    }
    ThrowInvalidArgument(path + ".type", "a single-modality postprocessor (a multimodal one holds these, one per modality)", "\"multimodal\"");
  }

  // A cross-attention from `q`-channel queries to `kv`-channel keys and values.
  static void CheckCrossAttention(const PerceiverLayerSpec& L, const std::string& path, int64_t q, int64_t kv, const std::string& what) {
    if (!L.is_cross_attention || L.q_dim != q || L.kv_dim != kv) {
      ThrowInvalidArgument(path, "a cross-attention from " + std::to_string(q) + what,
                           std::string(L.is_cross_attention ? "a cross-attention" : "a self-attention") + " from " + std::to_string(L.q_dim) + " to " +
                               std::to_string(L.kv_dim) + " channels");
    }
  }

 private:
  // Modalities are named and sorted, as transformers orders them.
  static void CheckModalityName(const std::string& name, const std::string* previous, const std::string& path) {
    if (name.empty() || (previous && name <= *previous)) ThrowInvalidArgument(path + ".name", "named modalities, sorted", "\"" + name + "\"");
  }

  static const spec::WeightName& Required(const spec::WeightName& w, const std::string& path) {
    if (!w.present()) ThrowInvalidArgument(path, "a weight (the modality is narrower than the common width)", "null");
    return w;
  }

  static const std::vector<int64_t>& Rank(const std::vector<int64_t>& shape, const std::string& path, size_t rank, const char* expected) {
    if (shape.size() != rank) ThrowInvalidArgument(path, expected, std::to_string(shape.size()) + " dimensions");
    return shape;
  }

  std::unique_ptr<Decoder> BuildBasicDecoder(const spec::BasicDecoderSpec& b, const std::string& path, int64_t d_latents, int64_t input_channels,
                                             bool* queries_inputs, int64_t* out_channels, std::vector<std::string>* modalities) {
    std::unique_ptr<QueryBuilder> queries = Queries(b.queries, path + ".queries", input_channels);
    *queries_inputs = b.queries.type == spec::QuerySpec::Type::kInputs;
    CrossAttentionDecoderSpec cross = Cross(b.cross_attention, b.final_layer, path, queries->channels(), d_latents);
    *out_channels = cross.final_layer.present() ? cross.final_layer.out : queries->channels();
    modalities->assign({""});
    return MakeBasicDecoder(std::move(cross), std::move(queries));
  }

  Napi::Object weights_;
  WeightLoadList& list_;
  int next_key_ = 0;
};

}  // namespace

ModelParts ReadModelSpec(const Napi::Object& js, const Napi::Object& weights, WeightLoadList& weights_to_load) {
  const std::string root = "spec";
  spec::ModelSpec s;
  spec::SpecFields fields;
  spec::Read(fields, js, root, &s);

  ModelBuilder b(weights, weights_to_load);
  ModelParts parts;
  parts.layer_norm_eps = static_cast<float>(s.layer_norm_eps);
  int64_t input_channels = 0;
  parts.preprocessor = b.BuildPreprocessor(s.preprocessor, root + ".preprocessor", &input_channels);
  parts.multimodal_inputs = s.preprocessor.type == spec::PreprocessorSpec::Type::kMultimodal;

  // Encoder.
  const std::string epath = root + ".encoder";
  EncoderSpec& enc = parts.encoder;
  enc.num_latents = s.encoder.num_latents;
  enc.d_latents = s.encoder.d_latents;
  enc.num_blocks = s.encoder.num_blocks;
  enc.latents = b.Values(s.encoder.latents, enc.num_latents, enc.d_latents);
  enc.cross_attention = b.Layer(s.encoder.cross_attention, epath + ".crossAttention");
  ModelBuilder::CheckCrossAttention(enc.cross_attention, epath + ".crossAttention", enc.d_latents, input_channels,
                                    "-channel queries (dLatents) to the " + std::to_string(input_channels) + "-channel inputs");
  for (size_t i = 0; i < s.encoder.self_attends.size(); ++i) {
    const std::string lpath = epath + ".selfAttends[" + std::to_string(i) + "]";
    PerceiverLayerSpec L = b.Layer(s.encoder.self_attends[i], lpath);
    if (L.is_cross_attention || L.q_dim != enc.d_latents) {
      ThrowInvalidArgument(lpath, "a self-attention on dLatents (" + std::to_string(enc.d_latents) + ")",
                           std::string(L.is_cross_attention ? "a cross-attention" : "a self-attention") + " on " + std::to_string(L.q_dim));
    }
    enc.self_attends.push_back(L);
  }

  // Decoder and postprocessor.
  if (!s.decoder) {
    if (s.postprocessor) ThrowInvalidArgument(root + ".postprocessor", "none without a decoder", "a postprocessor");
    return parts;
  }
  int64_t out_channels = 0;
  std::vector<std::string> modalities;
  parts.decoder = b.BuildDecoder(*s.decoder, root + ".decoder", enc.d_latents, input_channels, &parts.decoder_queries_inputs, &out_channels, &modalities);
  if (!s.postprocessor) return parts;
  const std::string ppath = root + ".postprocessor";
  if (s.postprocessor->type != spec::PostprocessorSpec::Type::kMultimodal) {
    parts.postprocessor = b.BuildPostprocessor(*s.postprocessor, ppath, out_channels);
    return parts;
  }
  const auto& list = s.postprocessor->multimodal_postprocessor->modalities;
  if (list.size() != modalities.size()) {
    ThrowInvalidArgument(ppath + ".modalities", std::to_string(modalities.size()) + " (one per decoded modality)", std::to_string(list.size()));
  }
  MultimodalPostprocessor::Modalities postprocessors;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string mpath = ppath + ".modalities[" + std::to_string(i) + "]";
    if (list[i].name != modalities[i]) ThrowInvalidArgument(mpath + ".name", "\"" + modalities[i] + "\"", "\"" + list[i].name + "\"");
    postprocessors.emplace_back(list[i].name, b.BuildPostprocessor(list[i].postprocessor, mpath + ".postprocessor", out_channels));
  }
  parts.multimodal_postprocessor = std::make_unique<MultimodalPostprocessor>(std::move(postprocessors));
  return parts;
}

}  // namespace perceiver
