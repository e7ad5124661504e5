#include "napi/spec_reader.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <utility>

#include "core/engine_error.h"
#include "napi/js_errors.h"

namespace perceiver {

namespace {

// Dimensions are bounded so that every product and BLAS argument fits comfortably.
constexpr int64_t kMaxDim = int64_t{1} << 24;

std::string Join(const std::string& path, const std::string& key) { return path + "." + key; }

class SpecReader {
 public:
  SpecReader(const Napi::Object& weights, WeightLoadList& list) : weights_(weights), list_(list) {}

  bool Present(const Napi::Object& o, const char* key) {
    Napi::Value v = o.Get(key);
    return !v.IsNull() && !v.IsUndefined();
  }

  int64_t Dim(const Napi::Object& o, const char* key, const std::string& path, int64_t min = 1) {
    Napi::Value v = o.Get(key);
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1.0;
    if (!v.IsNumber() || !(d >= static_cast<double>(min) && d <= static_cast<double>(kMaxDim) && std::floor(d) == d)) {
      ThrowInvalidArgument(Join(path, key), "an integer in [" + std::to_string(min) + ", 2^24]", DescribeJs(v));
    }
    return static_cast<int64_t>(d);
  }

  double Number(const Napi::Object& o, const char* key, const std::string& path, double min, double max) {
    Napi::Value v = o.Get(key);
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!(d >= min && d <= max)) {
      std::ostringstream range;
      range << "a number in [" << min << ", " << max << "]";
      ThrowInvalidArgument(Join(path, key), range.str(), DescribeJs(v));
    }
    return d;
  }

  bool Bool(const Napi::Object& o, const char* key, const std::string& path) {
    Napi::Value v = o.Get(key);
    if (!v.IsBoolean()) ThrowInvalidArgument(Join(path, key), "a boolean", DescribeJs(v));
    return v.As<Napi::Boolean>().Value();
  }

  Napi::Object Obj(const Napi::Object& o, const char* key, const std::string& path) {
    Napi::Value v = o.Get(key);
    if (!v.IsObject() || v.IsArray()) ThrowInvalidArgument(Join(path, key), "an object", DescribeJs(v));
    return v.As<Napi::Object>();
  }

  Napi::Array Array(const Napi::Object& o, const char* key, const std::string& path) {
    Napi::Value v = o.Get(key);
    if (!v.IsArray()) ThrowInvalidArgument(Join(path, key), "an array", DescribeJs(v));
    return v.As<Napi::Array>();
  }

  Napi::Object Element(const Napi::Array& a, uint32_t i, const std::string& path) {
    Napi::Value v = a.Get(i);
    if (!v.IsObject() || v.IsArray()) ThrowInvalidArgument(path + "[" + std::to_string(i) + "]", "an object", DescribeJs(v));
    return v.As<Napi::Object>();
  }

  std::vector<int64_t> Dims(const Napi::Object& o, const char* key, const std::string& path) {
    Napi::Array a = Array(o, key, path);
    if (a.Length() < 1 || a.Length() > 4) ThrowInvalidArgument(Join(path, key), "1 to 4 dimensions", std::to_string(a.Length()));
    std::vector<int64_t> dims;
    for (uint32_t i = 0; i < a.Length(); ++i) {
      Napi::Object holder = Napi::Object::New(o.Env());
      holder.Set("d", a.Get(i));
      dims.push_back(Dim(holder, "d", Join(path, key) + "[" + std::to_string(i) + "]"));
    }
    int64_t n = 1;
    for (int64_t d : dims) {
      n *= d;
      if (n > kMaxDim * 64) ThrowInvalidArgument(Join(path, key), "at most 2^30 points", "more");
    }
    return dims;
  }

  std::string Str(const Napi::Object& o, const char* key, const std::string& path) {
    Napi::Value v = o.Get(key);
    if (!v.IsString()) ThrowInvalidArgument(Join(path, key), "a string", DescribeJs(v));
    return v.As<Napi::String>().Utf8Value();
  }

  // The weight named by o[key], which must hold exactly rows x cols values: a Float32Array (host
  // memory, read on the loading thread while the caller keeps it alive) or a checkpoint file range
  // { fd, offset, dtype, length } (lib/io/safetensors.ts validated it against the file's header;
  // the loading thread re-checks what it reads).
  SourceWeight Host(const Napi::Object& o, const char* key, const std::string& path, int64_t rows, int64_t cols) {
    const std::string name = Str(o, key, path);
    Napi::Value v = weights_.Get(name);
    SourceWeight h;
    h.rows = rows;
    h.cols = cols;
    h.name = name;
    if (v.IsObject() && !v.IsTypedArray() && v.As<Napi::Object>().Has("fd")) {
      h.file = ReadFileRange(v.As<Napi::Object>(), name, rows * cols);
      return h;
    }
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
      ThrowWeightMismatch(name, "a Float32Array or a checkpoint file range (for " + Join(path, key) + ")", DescribeJs(v));
    }
    Napi::Float32Array array = v.As<Napi::Float32Array>();
    bool detached = false;
    napi_is_detached_arraybuffer(array.Env(), array.ArrayBuffer(), &detached);
    if (detached) ThrowWeightMismatch(name, std::to_string(rows * cols) + " values", "a detached ArrayBuffer");
    if (static_cast<int64_t>(array.ElementLength()) != rows * cols) {
      ThrowWeightMismatch(name, std::to_string(rows * cols) + " values", std::to_string(array.ElementLength()));
    }
    h.data = array.Data();
    return h;
  }

  static std::shared_ptr<const WeightFileRange> ReadFileRange(const Napi::Object& o, const std::string& name, int64_t count) {
    const std::string what = "weight \"" + name + "\" (a checkpoint file range)";  // the argument of its fields' errors
    auto integer = [&](const char* key, double max) {
      Napi::Value v = o.Get(key);
      const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1.0;
      if (!(d >= 0.0 && d <= max && d == static_cast<double>(static_cast<int64_t>(d)))) ThrowInvalidArgument(what + "." + key, "an integer in [0, " + std::to_string(static_cast<int64_t>(max)) + "]", DescribeJs(v));
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
    if (range->count != count) {
      ThrowWeightMismatch(name, std::to_string(count) + " values", std::to_string(range->count));
    }
    return range;
  }

  // A weight read element-wise (biases, LayerNorm, tables), loaded into backend memory.
  WeightRef Values(const Napi::Object& o, const char* key, const std::string& path, int64_t rows, int64_t cols) {
    SourceWeight h = Host(o, key, path, rows, cols);
    return list_.Add({h}, h.name, WeightUse::kValues);
  }
  WeightRef Values(const Napi::Object& o, const char* key, const std::string& path, int64_t count) {
    return Values(o, key, path, 1, count);
  }

  // An optional {weight, bias, in, out}; in/out may be fixed by the caller (0 = read them).
  struct HostLinear {
    SourceWeight weight, bias;  // bias.present() false when absent
    int64_t in = 0, out = 0;
    bool present = false;
  };
  HostLinear ReadLinear(const Napi::Object& parent, const char* key, const std::string& parent_path, int64_t in, int64_t out) {
    HostLinear w;
    if (!Present(parent, key)) return w;
    const std::string path = Join(parent_path, key);
    Napi::Object o = Obj(parent, key, parent_path);
    w.in = Dim(o, "in", path);
    w.out = Dim(o, "out", path);
    if ((in && w.in != in) || (out && w.out != out)) {
      ThrowInvalidArgument(path, "a " + (in ? std::to_string(in) : std::string("any")) + " -> " + (out ? std::to_string(out) : "any") + " projection",
                           std::to_string(w.in) + " -> " + std::to_string(w.out));
    }
    w.weight = Host(o, "weight", path, w.out, w.in);
    if (Present(o, "bias")) w.bias = Host(o, "bias", path, 1, w.out);
    w.present = true;
    return w;
  }

  LinearWeights Load(const HostLinear& h) {
    LinearWeights w;
    if (!h.present) return w;
    w.in = h.in;
    w.out = h.out;
    w.weight = list_.Add({h.weight}, h.weight.name, WeightUse::kMatrix);
    if (h.bias.present()) w.bias = list_.Add({h.bias}, h.bias.name, WeightUse::kValues);
    return w;
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

  LinearWeights Linear(const Napi::Object& parent, const char* key, const std::string& parent_path, int64_t in, int64_t out) {
    return Load(ReadLinear(parent, key, parent_path, in, out));
  }

  HostLinear RequiredHostLinear(const Napi::Object& parent, const char* key, const std::string& parent_path, int64_t in, int64_t out) {
    if (!Present(parent, key)) ThrowInvalidArgument(Join(parent_path, key), "a projection", "none");
    return ReadLinear(parent, key, parent_path, in, out);
  }
  LinearWeights RequiredLinear(const Napi::Object& parent, const char* key, const std::string& parent_path, int64_t in, int64_t out) {
    return Load(RequiredHostLinear(parent, key, parent_path, in, out));
  }

  LayerNormWeights LayerNorm(const Napi::Object& parent, const char* key, const std::string& parent_path, int64_t dim) {
    const std::string path = Join(parent_path, key);
    Napi::Object o = Obj(parent, key, parent_path);
    LayerNormWeights w;
    w.dim = Dim(o, "dim", path);
    if (w.dim != dim) ThrowInvalidArgument(path + ".dim", std::to_string(dim), std::to_string(w.dim));
    w.gamma = Values(o, "weight", path, dim);
    w.beta = Values(o, "bias", path, dim);
    return w;
  }

  PerceiverLayerSpec Layer(const Napi::Object& o, const std::string& path) {
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
      ThrowInvalidArgument(path, "qkChannels and vChannels multiples of numHeads",
                           std::to_string(L.qk_channels) + " and " + std::to_string(L.v_channels) + " for " + std::to_string(L.num_heads) + " heads");
    }
    // transformers projects cross-attention back to the query width, self-attention to vChannels,
    // and the MLP then works at the query width: self-attention needs vChannels == qDim.
    const int64_t out_channels = L.is_cross_attention ? L.q_dim : L.v_channels;
    if (!L.is_cross_attention && L.v_channels != L.q_dim) ThrowInvalidArgument(path, "vChannels == qDim in a self-attention layer", std::to_string(L.v_channels) + " and " + std::to_string(L.q_dim));
    L.layernorm1 = LayerNorm(o, "layernorm1", path, L.q_dim);
    if (L.is_cross_attention) L.layernorm2 = LayerNorm(o, "layernorm2", path, L.kv_dim);
    const HostLinear query = RequiredHostLinear(o, "query", path, L.q_dim, L.qk_channels);
    const HostLinear key = RequiredHostLinear(o, "key", path, L.kv_dim, L.qk_channels);
    const HostLinear value = RequiredHostLinear(o, "value", path, L.kv_dim, L.v_channels);
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
    L.output = RequiredLinear(o, "output", path, L.v_channels, out_channels);
    L.layernorm = LayerNorm(o, "layernorm", path, L.q_dim);
    L.mlp_dense1 = RequiredLinear(o, "mlpDense1", path, L.q_dim, L.q_dim * L.widening_factor);
    L.mlp_dense2 = RequiredLinear(o, "mlpDense2", path, L.q_dim * L.widening_factor, L.q_dim);
    return L;
  }

  PerceiverLayerSpec Layer(const Napi::Object& parent, const char* key, const std::string& parent_path) {
    return Layer(Obj(parent, key, parent_path), Join(parent_path, key));
  }

  FourierSpec Fourier(const Napi::Object& o, const std::string& path) {
    FourierSpec f;
    f.num_bands = Dim(o, "numBands", path);
    f.max_resolution = Dims(o, "maxResolution", path);
    f.concat_pos = Bool(o, "concatPos", path);
    f.sine_only = Bool(o, "sineOnly", path);
    return f;
  }

  PositionEncoder Position(const Napi::Object& parent, const char* key, const std::string& parent_path) {
    const std::string path = Join(parent_path, key);
    Napi::Object o = Obj(parent, key, parent_path);
    PositionEncodingSpec p;
    const std::string type = Str(o, "type", path);
    if (type == "trainable") {
      p.kind = PositionEncodingSpec::Kind::kTrainable;
      p.num_positions = Dim(o, "numPositions", path);
      p.trainable_channels = Dim(o, "numChannels", path);
      p.trainable = Values(o, "weight", path, p.num_positions, p.trainable_channels);
    } else if (type == "fourier") {
      p.kind = PositionEncodingSpec::Kind::kFourier;
      p.fourier = Fourier(o, path);
    } else {
      ThrowInvalidArgument(path + ".type", "a position encoding: trainable or fourier", "\"" + type + "\"");
    }
    const int64_t raw = p.kind == PositionEncodingSpec::Kind::kTrainable ? p.trainable_channels : p.fourier.OutputChannels();
    p.projection = Linear(o, "projection", path, raw, 0);
    return PositionEncoder(std::move(p), path + "#" + std::to_string(next_key_++));
  }

  std::unique_ptr<perceiver::Preprocessor> ReadPreprocessor(const Napi::Object& o, const std::string& path, int64_t* channels) {
    const std::string type = Str(o, "type", path);
    if (type == "text") {
      TextPreprocessorSpec t;
      t.vocab_size = Dim(o, "vocabSize", path);
      t.max_positions = Dim(o, "maxPositionEmbeddings", path);
      t.d_model = Dim(o, "dModel", path);
      t.embeddings = Values(o, "embeddings", path, t.vocab_size, t.d_model);
      t.positions = Values(o, "positionEmbeddings", path, t.max_positions, t.d_model);
      *channels = t.d_model;
      return MakeTextPreprocessor(t);
    }
    if (type == "image") return ReadImage(o, path, channels);
    if (type == "audio") {
      AudioPreprocessorSpec a;
      a.samples_per_patch = Dim(o, "samplesPerPatch", path);
      PositionEncoder position = Position(o, "position", path);
      a.concat_pos = ConcatOrAdd(o, path);
      const int64_t pos = position.spec().OutputChannels();
      if (!a.concat_pos && pos != a.samples_per_patch) ThrowInvalidArgument(path, "as many position channels as samples per patch (" + std::to_string(a.samples_per_patch) + ") to add them", std::to_string(pos));
      a.num_channels = a.concat_pos ? a.samples_per_patch + pos : pos;
      if (position.spec().kind == PositionEncodingSpec::Kind::kFourier && position.spec().fourier.max_resolution.size() != 1) {
        ThrowInvalidArgument(path + ".position", "1-D audio positions", std::to_string(position.spec().fourier.max_resolution.size()) + "-D");
      }
      ExpectChannels(o, path, a.num_channels);
      *channels = a.num_channels;
      return MakeAudioPreprocessor(a, std::move(position));
    }
    if (type == "none") {
      *channels = Dim(o, "numChannels", path);
      return MakeIdentityPreprocessor(*channels);
    }
    if (type == "onehot") {
      *channels = Dim(o, "numLabels", path);
      return MakeOneHotPreprocessor(*channels);
    }
    if (type == "multimodal") {
      const int64_t c = Dim(o, "numChannels", path);
      Napi::Array list = Array(o, "modalities", path);
      std::vector<MultimodalModality> modalities;
      std::string previous;
      for (uint32_t i = 0; i < list.Length(); ++i) {
        const std::string mpath = path + ".modalities[" + std::to_string(i) + "]";
        Napi::Object m = Element(list, i, path + ".modalities");
        MultimodalModality mod;
        mod.name = Str(m, "name", mpath);
        if (mod.name.empty() || (i > 0 && mod.name <= previous)) ThrowInvalidArgument(mpath + ".name", "named modalities, sorted", "\"" + mod.name + "\"");
        previous = mod.name;
        int64_t cm = 0;
        mod.preprocessor = ReadPreprocessor(Obj(m, "preprocessor", mpath), Join(mpath, "preprocessor"), &cm);
        if (cm > c) ThrowInvalidArgument(mpath, "at most the common width " + std::to_string(c), std::to_string(cm) + " channels");
        if (cm < c) mod.padding = Values(m, "padding", mpath, c - cm);
        if (Present(m, "mask")) {
          mod.mask = Values(m, "mask", mpath, c);
          mod.mask_probability = Number(m, "maskProbability", mpath, 0.0, 1.0);
        }
        modalities.push_back(std::move(mod));
      }
      if (modalities.empty()) ThrowInvalidArgument(path + ".modalities", "at least one", "none");
      *channels = c;
      return MakeMultimodalPreprocessor(std::move(modalities), c);
    }
    ThrowInvalidArgument(path + ".type", "a preprocessor: text, image, audio, none, onehot or multimodal", "\"" + type + "\"");
  }

  std::unique_ptr<perceiver::Preprocessor> ReadImage(const Napi::Object& o, const std::string& path, int64_t* channels) {
    ImagePreprocessorSpec s;
    const std::string prep = Str(o, "prepType", path);
    s.in_channels = Dim(o, "inChannels", path);
    s.out_channels = Dim(o, "outChannels", path);
    s.spatial_downsample = Dim(o, "spatialDownsample", path);
    s.temporal_downsample = Dim(o, "temporalDownsample", path);
    int64_t features = 0;
    if (prep == "conv1x1" || prep == "conv") {
      s.prep = prep == "conv" ? ImagePreprocessorSpec::Prep::kConv : ImagePreprocessorSpec::Prep::kConv1x1;
      s.conv_kernel = prep == "conv" ? 7 : 1;
      s.conv = RequiredLinear(o, "conv", path, s.in_channels * s.conv_kernel * s.conv_kernel, s.out_channels);
      if (s.prep == ImagePreprocessorSpec::Prep::kConv) {
        // transformers builds the same stem (7x7 / 2 conv, 3x3 / 2 pool: 4x in space) for any
        // power of 4, the published checkpoint's 1 included, and none that downsamples time.
        if (s.temporal_downsample != 1) ThrowInvalidArgument(path + ".temporalDownsample", "1 (the conv stem does not downsample in time)", std::to_string(s.temporal_downsample));
        const std::string bpath = Join(path, "batchnorm");
        Napi::Object bn = Obj(o, "batchnorm", path);
        const SourceWeight gamma = Host(bn, "weight", bpath, 1, s.out_channels);
        const SourceWeight beta = Host(bn, "bias", bpath, 1, s.out_channels);
        const SourceWeight mean = Host(bn, "runningMean", bpath, 1, s.out_channels);
        const SourceWeight var = Host(bn, "runningVar", bpath, 1, s.out_channels);
        const double eps = Number(bn, "eps", bpath, 0.0, 1.0);
        // Folded on the loading thread, where the statistics are read. A non-finite running
        // statistic makes a non-finite scale or shift: refused by name.
        const int64_t channels = s.out_channels;
        s.bn_scale = list_.AddComputed({gamma, var}, gamma.name + " / " + var.name, WeightUse::kValues, 1, channels,
                                       [eps, channels](const std::vector<const float*>& v) {
                                         std::vector<float> scale(static_cast<size_t>(channels));
                                         for (int64_t c = 0; c < channels; ++c) {
                                           scale[c] = static_cast<float>(v[0][c] / std::sqrt(static_cast<double>(v[1][c]) + eps));
                                         }
                                         return scale;
                                       });
        s.bn_shift = list_.AddComputed({gamma, beta, mean, var}, beta.name + " / " + mean.name, WeightUse::kValues, 1, channels,
                                       [eps, channels](const std::vector<const float*>& v) {
                                         std::vector<float> shift(static_cast<size_t>(channels));
                                         for (int64_t c = 0; c < channels; ++c) {
                                           const double k = v[0][c] / std::sqrt(static_cast<double>(v[3][c]) + eps);
                                           shift[c] = static_cast<float>(v[1][c] - v[2][c] * k);
                                         }
                                         return shift;
                                       });
      }
      features = s.out_channels;
    } else if (prep == "pixels") {
      s.prep = ImagePreprocessorSpec::Prep::kPixels;
      features = s.in_channels;
      if (s.spatial_downsample != 1) ThrowInvalidArgument(path + ".spatialDownsample", "1 (pixels are not downsampled)", std::to_string(s.spatial_downsample));
    } else if (prep == "patches") {
      s.prep = ImagePreprocessorSpec::Prep::kPatches;
      s.conv_after_patching = Linear(o, "convAfterPatching", path, 0, s.out_channels);
      features = s.conv_after_patching.present() ? s.out_channels : 0;  // else set by the input's shape
    } else {
      ThrowInvalidArgument(path + ".prepType", "conv1x1, conv, pixels or patches", "\"" + prep + "\"");
    }
    PositionEncoder position = Position(o, "position", path);
    s.concat_pos = ConcatOrAdd(o, path);
    s.num_channels = Dim(o, "numChannels", path);
    const int64_t pos = position.spec().OutputChannels();
    if (features == 0) features = s.concat_pos ? s.num_channels - pos : pos;
    if (features < 1 || s.num_channels != (s.concat_pos ? features + pos : pos) || (!s.concat_pos && features != pos)) {
      ThrowInvalidArgument(path + ".numChannels", "the features and position encoding's channels (" + std::to_string(features) + " and " + std::to_string(pos) + ")",
                           std::to_string(s.num_channels));
    }
    s.feature_channels = features;
    *channels = s.num_channels;
    return MakeImagePreprocessor(std::move(s), std::move(position));
  }

  bool ConcatOrAdd(const Napi::Object& o, const std::string& path) {
    const std::string how = Str(o, "concatOrAdd", path);
    if (how != "concat" && how != "add") ThrowInvalidArgument(path + ".concatOrAdd", "\"concat\" or \"add\"", "\"" + how + "\"");
    return how == "concat";
  }

  void ExpectChannels(const Napi::Object& o, const std::string& path, int64_t channels) {
    const int64_t given = Dim(o, "numChannels", path);
    if (given != channels) ThrowInvalidArgument(path + ".numChannels", std::to_string(channels), std::to_string(given));
  }

  std::unique_ptr<QueryBuilder> Queries(const Napi::Object& o, const std::string& path, int64_t input_channels) {
    const std::string type = Str(o, "type", path);
    if (type == "trainable") {
      const int64_t n = Dim(o, "numPositions", path), c = Dim(o, "numChannels", path);
      return MakeTrainableQueries(Values(o, "weight", path, n, c), n, c);
    }
    if (type == "fourier") {
      FourierSpec f = Fourier(o, path);
      std::vector<int64_t> dims = Dims(o, "outputIndexDims", path);
      if (dims.size() != f.max_resolution.size()) ThrowInvalidArgument(path + ".outputIndexDims", "the rank of maxResolution, " + std::to_string(f.max_resolution.size()), std::to_string(dims.size()));
      return MakeFourierQueries(std::move(f), std::move(dims), path + "#" + std::to_string(next_key_++));
    }
    if (type == "inputs") return MakeInputQueries(input_channels);
    ThrowInvalidArgument(path + ".type", "decoder queries: trainable, fourier or inputs", "\"" + type + "\"");
  }

  CrossAttentionDecoderSpec Cross(const Napi::Object& o, const std::string& path, int64_t query_channels, int64_t d_latents) {
    CrossAttentionDecoderSpec c;
    c.layer = Layer(o, "crossAttention", path);
    if (!c.layer.is_cross_attention || c.layer.q_dim != query_channels || c.layer.kv_dim != d_latents) {
      ThrowInvalidArgument(path + ".crossAttention", "a cross-attention from " + std::to_string(query_channels) + "-channel queries to the " + std::to_string(d_latents) + "-channel latents",
                           std::string(c.layer.is_cross_attention ? "a cross-attention" : "a self-attention") + " from " + std::to_string(c.layer.q_dim) + " to " + std::to_string(c.layer.kv_dim) + " channels");
    }
    c.final_layer = Linear(o, "finalLayer", path, query_channels, 0);
    return c;
  }

  std::unique_ptr<perceiver::Decoder> ReadDecoder(const Napi::Object& o, const std::string& path, int64_t d_latents, int64_t input_channels,
                                   bool* queries_inputs, int64_t* out_channels, std::vector<std::string>* modalities) {
    const std::string type = Str(o, "type", path);
    if (type == "basic") {
      Napi::Object q = Obj(o, "queries", path);
      std::unique_ptr<QueryBuilder> queries = Queries(q, Join(path, "queries"), input_channels);
      *queries_inputs = Str(q, "type", Join(path, "queries")) == "inputs";
      BasicDecoderSpec spec;
      spec.cross = Cross(o, path, queries->channels(), d_latents);
      const std::string output = Str(o, "output", path);
      if (output == "sequence") spec.output = DecoderOutput::kSequence;
      else if (output == "first") spec.output = DecoderOutput::kFirstPosition;
      else if (output == "flow") {
        spec.output = DecoderOutput::kOpticalFlow;
        spec.rescale = static_cast<float>(Number(o, "rescaleFactor", path, 1e-30, 1e30));
        spec.output_shape = Dims(o, "outputShape", path);
        if (spec.output_shape.size() != 2) ThrowInvalidArgument(path + ".outputShape", "[height, width]", std::to_string(spec.output_shape.size()) + " dimensions");
      } else if (output == "video") {
        spec.output = DecoderOutput::kVideo;
        spec.output_shape = Dims(o, "outputShape", path);
        if (spec.output_shape.size() != 4) ThrowInvalidArgument(path + ".outputShape", "[batch, frames, height, width]", std::to_string(spec.output_shape.size()) + " dimensions");
      } else {
        ThrowInvalidArgument(path + ".output", "sequence, first, flow or video", "\"" + output + "\"");
      }
      *out_channels = spec.cross.final_layer.present() ? spec.cross.final_layer.out : queries->channels();
      modalities->assign({""});
      return MakeBasicDecoder(std::move(spec), std::move(queries));
    }
    if (type == "multimodal") {
      const int64_t c = Dim(o, "queryChannels", path);
      Napi::Array list = Array(o, "modalities", path);
      std::vector<MultimodalDecoderModality> mods;
      modalities->clear();
      for (uint32_t i = 0; i < list.Length(); ++i) {
        const std::string mpath = path + ".modalities[" + std::to_string(i) + "]";
        Napi::Object m = Element(list, i, path + ".modalities");
        MultimodalDecoderModality mod;
        mod.name = Str(m, "name", mpath);
        if (mod.name.empty() || (i > 0 && mod.name <= modalities->back())) ThrowInvalidArgument(mpath + ".name", "named modalities, sorted", "\"" + mod.name + "\"");
        mod.queries = Queries(Obj(m, "queries", mpath), Join(mpath, "queries"), input_channels);
        const int64_t cm = mod.queries->channels();
        if (cm > c) ThrowInvalidArgument(mpath + ".queries", "at most the common width " + std::to_string(c), std::to_string(cm) + " channels");
        if (cm < c) mod.padding = Values(m, "padding", mpath, c - cm);
        modalities->push_back(mod.name);
        mods.push_back(std::move(mod));
      }
      if (mods.empty()) ThrowInvalidArgument(path + ".modalities", "at least one", "none");
      CrossAttentionDecoderSpec cross = Cross(o, path, c, d_latents);
      *out_channels = cross.final_layer.present() ? cross.final_layer.out : c;
      *queries_inputs = false;
      return MakeMultimodalDecoder(std::move(cross), std::move(mods), c);
    }
    if (type == "projection") {
      LinearWeights classifier = RequiredLinear(o, "classifier", path, d_latents, 0);
      *out_channels = classifier.out;
      *queries_inputs = false;
      modalities->assign({""});
      return MakeProjectionDecoder(classifier);
    }
    ThrowInvalidArgument(path + ".type", "a decoder: basic, multimodal or projection", "\"" + type + "\"");
  }

  std::unique_ptr<perceiver::Postprocessor> ReadPostprocessor(const Napi::Object& o, const std::string& path, int64_t in) {
    const std::string type = Str(o, "type", path);
    PostprocessorKind kind;
    if (type == "linear") kind = PostprocessorKind::kLinear;
    else if (type == "first") kind = PostprocessorKind::kFirstPosition;
    else if (type == "audio") kind = PostprocessorKind::kAudio;
    else ThrowInvalidArgument(path + ".type", "a postprocessor: linear, first or audio", "\"" + type + "\"");
    return MakeLinearPostprocessor(RequiredLinear(o, "projection", path, in, 0), kind);
  }

 private:
  Napi::Object weights_;
  WeightLoadList& list_;
  int next_key_ = 0;
};

}  // namespace

ModelParts ReadModelSpec(const Napi::Object& js, const Napi::Object& weights, WeightLoadList& weights_to_load) {
  SpecReader r(weights, weights_to_load);
  ModelParts parts;
  const std::string root = "spec";
  parts.layer_norm_eps = static_cast<float>(r.Number(js, "layerNormEps", root, 1e-30, 1.0));

  int64_t input_channels = 0;
  Napi::Object pre = r.Obj(js, "preprocessor", root);
  parts.preprocessor = r.ReadPreprocessor(pre, root + ".preprocessor", &input_channels);
  parts.multimodal_inputs = r.Str(pre, "type", root + ".preprocessor") == "multimodal";

  // Encoder.
  const std::string epath = root + ".encoder";
  Napi::Object e = r.Obj(js, "encoder", root);
  EncoderSpec& enc = parts.encoder;
  enc.num_latents = r.Dim(e, "numLatents", epath);
  enc.d_latents = r.Dim(e, "dLatents", epath);
  enc.num_blocks = r.Dim(e, "numBlocks", epath);
  enc.latents = r.Values(e, "latents", epath, enc.num_latents, enc.d_latents);
  enc.cross_attention = r.Layer(e, "crossAttention", epath);
  if (!enc.cross_attention.is_cross_attention || enc.cross_attention.q_dim != enc.d_latents ||
      enc.cross_attention.kv_dim != input_channels) {
    ThrowInvalidArgument(epath + ".crossAttention", "a cross-attention from dLatents queries to " + std::to_string(input_channels) + "-channel inputs",
                         std::string(enc.cross_attention.is_cross_attention ? "a cross-attention" : "a self-attention") + " from " +
                             std::to_string(enc.cross_attention.q_dim) + " to " + std::to_string(enc.cross_attention.kv_dim) + " channels");
  }
  Napi::Array layers = r.Array(e, "selfAttends", epath);
  for (uint32_t i = 0; i < layers.Length(); ++i) {
    const std::string lpath = epath + ".selfAttends[" + std::to_string(i) + "]";
    PerceiverLayerSpec L = r.Layer(r.Element(layers, i, epath + ".selfAttends"), lpath);
    if (L.is_cross_attention || L.q_dim != enc.d_latents) ThrowInvalidArgument(lpath, "a self-attention on dLatents (" + std::to_string(enc.d_latents) + ")",
                                                                              std::string(L.is_cross_attention ? "a cross-attention" : "a self-attention") + " on " + std::to_string(L.q_dim));
    enc.self_attends.push_back(L);
  }

  // Decoder and postprocessor.
  if (r.Present(js, "decoder")) {
    int64_t out_channels = 0;
    std::vector<std::string> modalities;
    parts.decoder = r.ReadDecoder(r.Obj(js, "decoder", root), root + ".decoder", enc.d_latents, input_channels,
                              &parts.decoder_queries_inputs, &out_channels, &modalities);
    if (r.Present(js, "postprocessor")) {
      const std::string ppath = root + ".postprocessor";
      Napi::Object post = r.Obj(js, "postprocessor", root);
      if (r.Str(post, "type", ppath) == "multimodal") {
        Napi::Array list = r.Array(post, "modalities", ppath);
        if (list.Length() != modalities.size()) ThrowInvalidArgument(ppath + ".modalities", std::to_string(modalities.size()) + " (one per decoded modality)", std::to_string(list.Length()));
        for (uint32_t i = 0; i < list.Length(); ++i) {
          const std::string mpath = ppath + ".modalities[" + std::to_string(i) + "]";
          Napi::Object m = r.Element(list, i, ppath + ".modalities");
          const std::string name = r.Str(m, "name", mpath);
          if (name != modalities[i]) ThrowInvalidArgument(mpath + ".name", "\"" + modalities[i] + "\"", "\"" + name + "\"");
          parts.modality_postprocessors.emplace_back(name, r.ReadPostprocessor(r.Obj(m, "postprocessor", mpath), mpath + ".postprocessor", out_channels));
        }
      } else {
        parts.postprocessor = r.ReadPostprocessor(post, ppath, out_channels);
      }
    }
  } else if (r.Present(js, "postprocessor")) {
    ThrowInvalidArgument("spec.postprocessor", "none without a decoder", "a postprocessor");
  }
  return parts;
}

}  // namespace perceiver
