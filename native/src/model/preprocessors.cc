#include "model/preprocessors.h"

#include <algorithm>
#include <random>
#include <string>

#include "core/engine_error.h"

namespace perceiver {

namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string Arg(const std::string& name) { return name.empty() ? "inputs" : "inputs." + name; }

void Copy3D(Backend& be, float* dst, const int64_t (&dst_strides)[3], const float* src, const int64_t (&src_strides)[3],
            const int64_t (&shape)[3]) {
  RunCopy(be, dst, dst_strides, src, src_strides, shape, 3);
}

const InputArray& FloatInput(const InputArray& input, const std::string& name) {
  if (input.integer) ThrowInvalidArgument(Arg(name), "float32 values", "integers");
  return input;
}

// A float input in backend memory. A host input is uploaded; a DeviceTensor input is read where
// it lies when the preprocessor only reads it, and copied within the backend when the
// preprocessor writes into it (the caller's tensor must not change).
BackendTensor InputOnBackend(Backend& be, const InputArray& input, bool writable) {
  if (input.on_backend() && !writable) {
    BackendTensor t = input.resident;
    t.shape = input.shape;
    return t;
  }
  BackendTensor t = AllocateTensor(be, input.shape);
  if (input.on_backend()) RunContiguousCopy(be, t.data(), input.resident.data(), input.size());
  else be.CopyFromHost(t.data(), input.values.data(), input.values.size());
  return t;
}

void CheckBatch(const InputArray& input, const std::string& name, int64_t batch) {
  if (input.shape.empty() || input.shape[0] != batch) {
    ThrowInvalidArgument(Arg(name), "a leading batch dimension of " + std::to_string(batch), "shape " + ShapeString(input.shape));
  }
}

// Joins features [batch, rows, f] and position encodings [rows, p] (shared by the batch) by
// concatenation along channels, or by addition when f == p.
BackendTensor JoinPositions(Backend& be, const BackendTensor& features, const BackendTensor& pos, bool concat) {
  const int64_t batch = features.shape[0], rows = features.shape[1], f = features.shape[2], p = pos.shape[1];
  if (!concat) {
    AddRowsOp add;
    add.y = features.data();
    add.x = pos.data();
    add.rows = batch * rows;
    add.cols = f;
    add.period = rows;
    be.Run(add);
    return features;
  }
  BackendTensor out = AllocateTensor(be, {batch, rows, f + p});
  CopyIntoColumns(be, features.data(), rows * f, batch, rows, f, out.data(), f + p, 0);
  CopyIntoColumns(be, pos.data(), 0, batch, rows, p, out.data(), f + p, f);
  return out;
}

class TextPreprocessor final : public Preprocessor {
 public:
  explicit TextPreprocessor(TextPreprocessorSpec spec) : spec_(spec) {}
  int64_t channels() const override { return spec_.d_model; }

  EncoderInputs Run(PreprocessContext& ctx, const std::string& name, const InputArray& input) override {
    if (!input.integer) ThrowInvalidArgument(Arg(name), "integer token ids", "float32 values");
    if (input.shape.size() != 2) ThrowInvalidArgument(Arg(name), "shape [batch, sequence]", "shape " + ShapeString(input.shape));
    CheckBatch(input, name, ctx.request.batch);
    const int64_t batch = input.shape[0], seq = input.shape[1];
    // The one check of the sequence's length: each position indexes the position table.
    if (seq < 1 || seq > spec_.max_positions) {
      ThrowInvalidArgument(Arg(name), "a sequence of 1 to max_position_embeddings = " + std::to_string(spec_.max_positions) + " tokens",
                           std::to_string(seq) + " tokens");
    }
    // The one check of token ids (lib/modeling/preprocessors.ts leaves it here): each indexes the
    // embedding table.
    for (size_t i = 0; i < input.ids.size(); ++i) {
      const int32_t id = input.ids[i];
      if (id < 0 || id >= spec_.vocab_size) {
        // Ids beyond int32 arrive as INT32_MIN (napi/native_model.cc).
        const int64_t b = static_cast<int64_t>(i) / seq, j = static_cast<int64_t>(i) % seq;
        ThrowInvalidArgument(Arg(name), "token ids in [0, " + std::to_string(spec_.vocab_size) + ")",
                             (id == INT32_MIN ? std::string("an id beyond int32") : std::to_string(id)) + " at [" + std::to_string(b) + ", " +
                                 std::to_string(j) + "]");
      }
    }
    EncoderInputs out;
    out.sequence = AllocateTensor(ctx.backend, {batch, seq, spec_.d_model});
    EmbeddingOp lookup;
    lookup.ids = input.ids.data();
    lookup.batch = batch;
    lookup.seq = seq;
    lookup.table = spec_.embeddings.get();
    lookup.positions = spec_.positions.get();
    lookup.out = out.sequence.data();
    ctx.backend.Run(lookup);
    out.modality_sizes = {{name, seq}};
    out.index_dims = {seq};
    return out;
  }

 private:
  TextPreprocessorSpec spec_;
};

class ImagePreprocessor final : public Preprocessor {
 public:
  ImagePreprocessor(ImagePreprocessorSpec spec, PositionEncoder position) : spec_(std::move(spec)), position_(std::move(position)) {}
  int64_t channels() const override { return spec_.num_channels; }

  EncoderInputs Run(PreprocessContext& ctx, const std::string& name, const InputArray& raw) override {
    const InputArray& input = FloatInput(raw, name);
    Backend& be = ctx.backend;
    const size_t rank = input.shape.size();
    if (rank != 4 && rank != 5) {
      ThrowInvalidArgument(Arg(name), "images [batch, channels, height, width] or video [batch, frames, channels, height, width]",
                           "shape " + ShapeString(input.shape));
    }
    CheckBatch(input, name, ctx.request.batch);
    const int64_t channels_in = input.shape[rank - 3];
    // Patches followed by a linear layer take any channel count whose patches fit that layer
    // (optical flow's 27 values per pixel); everything else reads in_channels.
    const bool any_channels = spec_.prep == ImagePreprocessorSpec::Prep::kPatches && spec_.conv_after_patching.present();
    if (!any_channels && channels_in != spec_.in_channels) {
      ThrowInvalidArgument(Arg(name), std::to_string(spec_.in_channels) + " channels",
                           std::to_string(channels_in) + " (shape " + ShapeString(input.shape) + ")");
    }
    for (int64_t d : input.shape) {
      if (d < 1) ThrowInvalidArgument(Arg(name), "every dimension at least 1", "shape " + ShapeString(input.shape));
    }
    const BackendTensor x = InputOnBackend(be, input, /*writable=*/false);  // the image ops only read it

    BackendTensor features;  // [batch, rows, f]
    std::vector<int64_t> index_dims;
    switch (spec_.prep) {
      case ImagePreprocessorSpec::Prep::kConv1x1:
      case ImagePreprocessorSpec::Prep::kConv:
        features = Convolve(ctx, name, x, &index_dims);
        break;
      case ImagePreprocessorSpec::Prep::kPixels:
        features = Pixels(ctx, name, x, &index_dims);
        break;
      case ImagePreprocessorSpec::Prep::kPatches:
        features = Patches(ctx, name, x, &index_dims);
        break;
    }
    // The encoder reads exactly num_channels per position: patches of another size cannot pass.
    if (features.shape[2] != spec_.feature_channels) {
      ThrowInvalidArgument(Arg(name), std::to_string(spec_.feature_channels) + " features per position",
                           std::to_string(features.shape[2]) + " (shape " + ShapeString(input.shape) + ")");
    }
    const BackendTensor pos = position_.ForGrid(ctx, index_dims, ctx.request.interpolate_pos_encoding, Arg(name));
    EncoderInputs out;
    out.sequence = JoinPositions(be, features, pos, spec_.concat_pos);
    out.modality_sizes = {{name, features.shape[1]}};
    out.index_dims = index_dims;
    return out;
  }

 private:
  BackendTensor Convolve(PreprocessContext& ctx, const std::string& name, const BackendTensor& x,
                         std::vector<int64_t>* index_dims) {
    Backend& be = ctx.backend;
    if (x.shape.size() != 4) ThrowInvalidArgument(Arg(name), "images [batch, channels, height, width] (this preprocessor takes no video)", "shape " + ShapeString(x.shape));
    const int64_t batch = x.shape[0], h = x.shape[2], w = x.shape[3], k = spec_.conv_kernel;
    const bool stem = spec_.prep == ImagePreprocessorSpec::Prep::kConv;
    // conv1x1 strides by spatial_downsample without padding; the conv stem is a 7x7 / 2 "same"
    // convolution (transformers' Conv2dSamePadding), BatchNorm, ReLU and a 3x3 / 2 max-pool.
    const int64_t stride = stem ? 2 : spec_.spatial_downsample;
    const int64_t pad_before = stem ? k / 2 + k % 2 - 1 : 0, pad_after = stem ? k / 2 : 0;
    const int64_t oh = (h + pad_before + pad_after - k) / stride + 1, ow = (w + pad_before + pad_after - k) / stride + 1;
    if (oh < (stem ? 3 : 1) || ow < (stem ? 3 : 1)) {
      ThrowInvalidArgument(Arg(name), "an image large enough for this preprocessor", "shape " + ShapeString(x.shape));
    }
    BackendTensor conv = AllocateTensor(be, {batch, oh, ow, spec_.out_channels});
    Conv2dOp op;
    op.x = x.data();
    op.batch = batch;
    op.in_c = spec_.in_channels;
    op.h = h;
    op.w = w;
    op.weight = spec_.conv.weight.get();
    op.bias = spec_.conv.bias.get();
    op.kh = k;
    op.kw = k;
    op.stride = stride;
    op.pad_top = pad_before;
    op.pad_left = pad_before;
    op.out_h = oh;
    op.out_w = ow;
    op.y = conv.data();
    be.Run(op);
    if (!stem) {
      *index_dims = {oh, ow};
      conv.shape = {batch, oh * ow, spec_.out_channels};
      return conv;
    }
    ChannelAffineOp affine;
    affine.y = conv.data();
    affine.rows = batch * oh * ow;
    affine.cols = spec_.out_channels;
    affine.scale = spec_.bn_scale.get();
    affine.shift = spec_.bn_shift.get();
    affine.relu = true;
    be.Run(affine);
    const int64_t ph = (oh - 3) / 2 + 1, pw = (ow - 3) / 2 + 1;
    BackendTensor pooled = AllocateTensor(be, {batch, ph * pw, spec_.out_channels});
    MaxPoolOp pool;
    pool.x = conv.data();
    pool.batch = batch;
    pool.h = oh;
    pool.w = ow;
    pool.c = spec_.out_channels;
    pool.kernel = 3;
    pool.stride = 2;
    pool.out_h = ph;
    pool.out_w = pw;
    pool.y = pooled.data();
    be.Run(pool);
    *index_dims = {ph, pw};
    return pooled;
  }

  // Raw pixels, channels moved last; video is subsampled in time and space.
  BackendTensor Pixels(PreprocessContext& ctx, const std::string& name, const BackendTensor& x,
                       std::vector<int64_t>* index_dims) {
    Backend& be = ctx.backend;
    const int64_t batch = x.shape[0];
    if (x.shape.size() == 4) {
      const int64_t c = x.shape[1], h = x.shape[2], w = x.shape[3];
      BackendTensor out = AllocateTensor(be, {batch, h * w, c});
      const int64_t shape[4] = {batch, h, w, c};
      const int64_t src[4] = {c * h * w, w, 1, h * w};
      const int64_t dst[4] = {h * w * c, w * c, c, 1};
      RunCopy(be, out.data(), dst, x.data(), src, shape, 4);
      *index_dims = {h, w};
      return out;
    }
    const int64_t t = x.shape[1], c = x.shape[2], h = x.shape[3], w = x.shape[4];
    const int64_t ts = spec_.temporal_downsample, ss = spec_.spatial_downsample;
    const int64_t t2 = (t + ts - 1) / ts, h2 = (h + ss - 1) / ss, w2 = (w + ss - 1) / ss;
    BackendTensor out = AllocateTensor(be, {batch, t2 * h2 * w2, c});
    const int64_t shape[5] = {batch, t2, h2, w2, c};
    const int64_t src[5] = {t * c * h * w, ts * c * h * w, ss * w, ss, h * w};
    const int64_t dst[5] = {t2 * h2 * w2 * c, h2 * w2 * c, w2 * c, c, 1};
    RunCopy(be, out.data(), dst, x.data(), src, shape, 5);
    *index_dims = {t2, h2, w2};
    return out;
  }

  // Space-to-depth: each block of frames x rows x columns becomes one position whose channels are
  // the block's values in (frame, row, column, channel) order.
  BackendTensor Patches(PreprocessContext& ctx, const std::string& name, const BackendTensor& x,
                        std::vector<int64_t>* index_dims) {
    Backend& be = ctx.backend;
    const int64_t batch = x.shape[0], s = spec_.spatial_downsample;
    const bool video = x.shape.size() == 5;
    const int64_t t = video ? x.shape[1] : 1, ts = video ? spec_.temporal_downsample : 1;
    const int64_t c = x.shape[x.shape.size() - 3], h = x.shape[x.shape.size() - 2], w = x.shape[x.shape.size() - 1];
    if (h % s != 0 || w % s != 0 || t % ts != 0) {
      ThrowInvalidArgument(Arg(name),
                           "height and width multiples of " + std::to_string(s) + (video ? " and frames a multiple of " + std::to_string(ts) : std::string()),
                           "shape " + ShapeString(x.shape));
    }
    const int64_t t2 = t / ts, h2 = h / s, w2 = w / s, depth = ts * s * s * c;
    BackendTensor patches = AllocateTensor(be, {batch, t2 * h2 * w2, depth});
    const int64_t shape[8] = {batch, t2, h2, w2, ts, s, s, c};
    const int64_t src[8] = {t * c * h * w, ts * c * h * w, s * w, s, c * h * w, w, 1, h * w};
    int64_t dst[8];
    dst[7] = 1;
    for (int d = 6; d >= 0; --d) dst[d] = dst[d + 1] * shape[d + 1];
    RunCopy(be, patches.data(), dst, x.data(), src, shape, 8);
    // transformers squeezes a single remaining frame (optical flow's two frames -> one).
    if (video && t2 != 1) *index_dims = {t2, h2, w2};
    else *index_dims = {h2, w2};
    if (spec_.conv_after_patching.present()) {
      if (spec_.conv_after_patching.in != depth) {
        ThrowInvalidArgument(Arg(name), "patches of " + std::to_string(spec_.conv_after_patching.in) + " values (what the layer after patching takes)",
                             std::to_string(depth) + " (shape " + ShapeString(x.shape) + ")");
      }
      return ApplyLinear(be, spec_.conv_after_patching, patches);
    }
    return patches;
  }

  ImagePreprocessorSpec spec_;
  PositionEncoder position_;
};

class AudioPreprocessor final : public Preprocessor {
 public:
  AudioPreprocessor(AudioPreprocessorSpec spec, PositionEncoder position) : spec_(spec), position_(std::move(position)) {}
  int64_t channels() const override { return spec_.num_channels; }

  EncoderInputs Run(PreprocessContext& ctx, const std::string& name, const InputArray& raw) override {
    const InputArray& input = FloatInput(raw, name);
    Backend& be = ctx.backend;
    if (input.shape.size() < 2) ThrowInvalidArgument(Arg(name), "samples [batch, samples, 1]", "shape " + ShapeString(input.shape));
    CheckBatch(input, name, ctx.request.batch);
    const int64_t batch = input.shape[0], per_item = input.size() / std::max<int64_t>(1, batch);
    if (per_item == 0 || per_item % spec_.samples_per_patch != 0) {
      ThrowInvalidArgument(Arg(name), "samples per item a positive multiple of samples_per_patch = " + std::to_string(spec_.samples_per_patch),
                           std::to_string(per_item));
    }
    const int64_t patches = per_item / spec_.samples_per_patch;
    // Adding the positions (rather than concatenating them) writes into the features.
    BackendTensor features = InputOnBackend(be, input, /*writable=*/!spec_.concat_pos);
    features.shape = {batch, patches, spec_.samples_per_patch};
    const BackendTensor pos = position_.ForGrid(ctx, {patches}, false, Arg(name));
    EncoderInputs out;
    out.sequence = JoinPositions(be, features, pos, spec_.concat_pos);
    out.modality_sizes = {{name, patches}};
    out.index_dims = {patches};
    return out;
  }

 private:
  AudioPreprocessorSpec spec_;
  PositionEncoder position_;
};

class OneHotPreprocessor final : public Preprocessor {
 public:
  explicit OneHotPreprocessor(int64_t num_labels) : num_labels_(num_labels) {}
  int64_t channels() const override { return num_labels_; }

  EncoderInputs Run(PreprocessContext& ctx, const std::string& name, const InputArray& raw) override {
    const InputArray& input = FloatInput(raw, name);
    if (input.shape.size() != 2 || input.shape[1] != num_labels_) {
      ThrowInvalidArgument(Arg(name), "shape [batch, " + std::to_string(num_labels_) + "]", "shape " + ShapeString(input.shape));
    }
    CheckBatch(input, name, ctx.request.batch);
    EncoderInputs out;
    out.sequence = InputOnBackend(ctx.backend, input, /*writable=*/false);  // the encoder only reads it
    out.sequence.shape = {input.shape[0], 1, num_labels_};
    out.modality_sizes = {{name, 1}};
    out.index_dims = {1};
    return out;
  }

 private:
  int64_t num_labels_;
};

// No preprocessor: the caller passes the encoder's input sequence itself, [batch, rows, channels].
class IdentityPreprocessor final : public Preprocessor {
 public:
  explicit IdentityPreprocessor(int64_t channels) : channels_(channels) {}
  int64_t channels() const override { return channels_; }

  EncoderInputs Run(PreprocessContext& ctx, const std::string& name, const InputArray& raw) override {
    const InputArray& input = FloatInput(raw, name);
    if (input.shape.size() != 3 || input.shape[1] < 1 || input.shape[2] != channels_) {
      ThrowInvalidArgument(Arg(name), "shape [batch, sequence, " + std::to_string(channels_) + "]", "shape " + ShapeString(input.shape));
    }
    CheckBatch(input, name, ctx.request.batch);
    EncoderInputs out;
    out.sequence = InputOnBackend(ctx.backend, input, /*writable=*/false);  // the encoder only reads it
    out.modality_sizes = {{name, input.shape[1]}};
    out.index_dims = {input.shape[1]};
    return out;
  }

 private:
  int64_t channels_;
};

class MultimodalPreprocessor final : public Preprocessor {
 public:
  MultimodalPreprocessor(std::vector<MultimodalModality> modalities, int64_t channels)
      : modalities_(std::move(modalities)), channels_(channels) {}
  int64_t channels() const override { return channels_; }

  EncoderInputs Run(PreprocessContext& ctx, const std::string&, const InputArray&) override {
    Backend& be = ctx.backend;
    const auto& inputs = ctx.request.inputs;
    for (const auto& [name, input] : inputs) {
      const bool known = std::any_of(modalities_.begin(), modalities_.end(), [&](const MultimodalModality& m) { return m.name == name; });
      if (!known) ThrowInvalidArgument(Arg(name), "a modality of this model (" + Expected() + ")", "\"" + name + "\"");
    }
    std::vector<EncoderInputs> parts;
    int64_t rows = 0;
    for (const MultimodalModality& m : modalities_) {
      auto it = inputs.find(m.name);
      if (it == inputs.end()) ThrowInvalidArgument(Arg(m.name), "every modality of this model (" + Expected() + ")", "none");
      parts.push_back(m.preprocessor->Run(ctx, m.name, it->second));
      rows += parts.back().sequence.shape[1];
    }
    const int64_t batch = ctx.request.batch, c = channels_;
    EncoderInputs out;
    out.sequence = AllocateTensor(be, {batch, rows, c});
    std::mt19937_64 rng(ctx.request.seed);
    int64_t row0 = 0;
    for (size_t i = 0; i < modalities_.size(); ++i) {
      const MultimodalModality& m = modalities_[i];
      const BackendTensor& seq = parts[i].sequence;
      const int64_t n = seq.shape[1], cm = seq.shape[2];
      float* dst = out.sequence.data() + row0 * c;
      // The modality's own channels, then its learned padding up to the common width.
      Copy3D(be, dst, {rows * c, c, 1}, seq.data(), {n * cm, cm, 1}, {batch, n, cm});
      if (c > cm) Copy3D(be, dst + cm, {rows * c, c, 1}, m.padding->values(), {0, 0, 1}, {batch, n, c - cm});
      // Masking as transformers applies it: each position is replaced by the learned mask token
      // with the modality's probability (0 and 1, the published settings, are deterministic).
      if (m.mask != nullptr && m.mask_probability >= 1.0) {
        Copy3D(be, dst, {rows * c, c, 1}, m.mask->values(), {0, 0, 1}, {batch, n, c});
      } else if (m.mask != nullptr && m.mask_probability > 0.0) {
        std::bernoulli_distribution masked(m.mask_probability);
        for (int64_t b = 0; b < batch; ++b) {
          for (int64_t r = 0; r < n; ++r) {
            if (masked(rng)) Copy3D(be, dst + (b * rows + r) * c, {c, c, 1}, m.mask->values(), {0, 0, 1}, {1, 1, c});
          }
        }
      }
      out.modality_sizes.emplace_back(m.name, n);
      row0 += n;
    }
    return out;
  }

 private:
  std::string Expected() const {
    std::string s;
    for (const auto& m : modalities_) s += (s.empty() ? "" : ", ") + m.name;
    return s;
  }
  std::vector<MultimodalModality> modalities_;
  int64_t channels_;
};

}  // namespace

int64_t PositionEncodingSpec::OutputChannels() const {
  if (projection.present()) return projection.out;
  return kind == Kind::kTrainable ? trainable_channels : fourier.OutputChannels();
}

BackendTensor PositionEncoder::ForGrid(PreprocessContext& ctx, const std::vector<int64_t>& index_dims, bool interpolate,
                                       const std::string& argument) const {
  Backend& be = ctx.backend;
  const int64_t rows = Product(index_dims);
  std::string key = key_ + (interpolate ? "|i|" : "|g|");
  for (int64_t d : index_dims) key += std::to_string(d) + ",";
  BackendTensor out;
  out.shape = {rows, spec_.OutputChannels()};
  if ((out.buffer = ctx.cache.Find(key))) return out;

  BackendTensor raw;
  if (spec_.kind == PositionEncodingSpec::Kind::kFourier) {
    if (index_dims.size() != spec_.fourier.max_resolution.size()) {
      ThrowInvalidArgument(argument, "a " + std::to_string(spec_.fourier.max_resolution.size()) + "-D grid (the Fourier features' dimensions)",
                           "a " + std::to_string(index_dims.size()) + "-D grid");
    }
    const int64_t channels = spec_.fourier.OutputChannels();
    if (index_dims.size() <= static_cast<size_t>(kMaxFourierDims)) {  // made by the backend, where they are used
      raw.buffer = std::shared_ptr<BackendBuffer>(be.Allocate(static_cast<size_t>(rows * channels)));
      FourierFeaturesOp features;
      features.dims = static_cast<int>(index_dims.size());
      std::copy(index_dims.begin(), index_dims.end(), features.index_dims);
      std::copy(spec_.fourier.max_resolution.begin(), spec_.fourier.max_resolution.end(), features.max_resolution);
      features.bands = spec_.fourier.num_bands;
      features.concat_pos = spec_.fourier.concat_pos;
      features.sine_only = spec_.fourier.sine_only;
      features.out = raw.buffer->data();
      be.Run(features);
    } else {
      std::vector<float> host(static_cast<size_t>(rows * channels));
      FourierFeatures(GridPositions(index_dims).data(), rows, spec_.fourier, host.data());
      raw.buffer = Upload(be, host);
    }
    raw.shape = {rows, channels};
  } else if (rows == spec_.num_positions) {
    raw.buffer = std::shared_ptr<BackendBuffer>(be.Allocate(static_cast<size_t>(rows * spec_.trainable_channels)));
    RunContiguousCopy(be, raw.buffer->data(), spec_.trainable->values(), rows * spec_.trainable_channels);
    raw.shape = {rows, spec_.trainable_channels};
  } else {
    const int64_t side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(spec_.num_positions))));
    if (!interpolate || index_dims.size() != 2 || side * side != spec_.num_positions) {
      ThrowInvalidArgument(argument,
                           std::to_string(spec_.num_positions) + " positions, the model's learned position table (pass interpolatePosEncoding to resize it to another image size)",
                           std::to_string(rows) + " positions");
    }
    std::vector<float> table(static_cast<size_t>(spec_.num_positions * spec_.trainable_channels));
    be.CopyToHost(table.data(), spec_.trainable->values(), table.size());
    raw.buffer = Upload(be, BicubicResize(table.data(), side, side, spec_.trainable_channels, index_dims[0], index_dims[1]));
    raw.shape = {rows, spec_.trainable_channels};
  }
  if (spec_.projection.present()) raw = ApplyLinear(be, spec_.projection, raw);
  out.buffer = ctx.cache.Insert(key, raw.buffer);
  return out;
}

std::unique_ptr<Preprocessor> MakeTextPreprocessor(TextPreprocessorSpec spec) {
  return std::make_unique<TextPreprocessor>(spec);
}
std::unique_ptr<Preprocessor> MakeImagePreprocessor(ImagePreprocessorSpec spec, PositionEncoder position) {
  return std::make_unique<ImagePreprocessor>(std::move(spec), std::move(position));
}
std::unique_ptr<Preprocessor> MakeAudioPreprocessor(AudioPreprocessorSpec spec, PositionEncoder position) {
  return std::make_unique<AudioPreprocessor>(spec, std::move(position));
}
std::unique_ptr<Preprocessor> MakeIdentityPreprocessor(int64_t channels) {
  return std::make_unique<IdentityPreprocessor>(channels);
}
std::unique_ptr<Preprocessor> MakeOneHotPreprocessor(int64_t num_labels) {
  return std::make_unique<OneHotPreprocessor>(num_labels);
}
std::unique_ptr<Preprocessor> MakeMultimodalPreprocessor(std::vector<MultimodalModality> modalities, int64_t channels) {
  return std::make_unique<MultimodalPreprocessor>(std::move(modalities), channels);
}

}  // namespace perceiver
