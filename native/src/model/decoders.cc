#include "model/decoders.h"

#include <algorithm>
#include <cstdlib>

#include "core/engine_error.h"

namespace perceiver {

namespace {

std::string PointsArg(const std::string& modality) {
  return modality.empty() ? "subsampledOutputPoints" : "subsampledOutputPoints." + modality;
}

void CheckPoints(const std::vector<int64_t>& points, int64_t total, const std::string& modality) {
  if (points.empty()) ThrowInvalidArgument(PointsArg(modality), "at least one point", "none");
  for (size_t i = 0; i < points.size(); ++i) {
    if (points[i] < 0 || points[i] >= total) {
      ThrowInvalidArgument(PointsArg(modality), "indices in [0, " + std::to_string(total) + ")",
                           std::to_string(points[i]) + " at position " + std::to_string(i));
    }
  }
}

class TrainableQueries final : public QueryBuilder {
 public:
  TrainableQueries(WeightRef table, int64_t positions, int64_t channels)
      : table_(std::move(table)), positions_(positions), channels_(channels) {}
  int64_t channels() const override { return channels_; }
  int64_t num_points(const DecodeContext&) const override { return positions_; }
  // transformers builds a learned table's queries whole, subsampled points or not.
  DecoderQueries Build(DecodeContext&, const std::vector<int64_t>*) const override {
    DecoderQueries q;
    q.shared = table_->values();
    q.rows = positions_;
    q.channels = channels_;
    q.cache_key = "trainable";
    return q;
  }

 private:
  WeightRef table_;
  int64_t positions_, channels_;
};

class FourierQueries final : public QueryBuilder {
 public:
  FourierQueries(FourierSpec spec, std::vector<int64_t> dims, std::string key)
      : spec_(std::move(spec)), dims_(std::move(dims)), key_(std::move(key)) {}
  int64_t channels() const override { return spec_.OutputChannels(); }
  int64_t num_points(const DecodeContext&) const override { return Product(dims_); }

  DecoderQueries Build(DecodeContext& ctx, const std::vector<int64_t>* points) const override {
    const int64_t c = channels();
    std::shared_ptr<BackendBuffer> features;
    int64_t n = 0;
    std::string stable_key;
    if (points == nullptr) {
      // Every point, positioned as transformers positions subsampled points (so decoding all of
      // them equals passing every index), computed once and cached.
      n = Product(dims_);
      const std::string key = key_ + "|all";
      if (!(features = ctx.cache.Find(key))) {
        std::vector<float> host(static_cast<size_t>(n * c));
        std::vector<int64_t> all(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) all[i] = i;
        FourierFeatures(PointPositions(all, dims_).data(), n, spec_, host.data());
        features = ctx.cache.Insert(key, Upload(ctx.backend, host));
      }
      stable_key = key;
    } else {
      n = static_cast<int64_t>(points->size());
      std::vector<float> host(static_cast<size_t>(n * c));
      FourierFeatures(PointPositions(*points, dims_).data(), n, spec_, host.data());
      features = Upload(ctx.backend, host);
    }
    DecoderQueries q;
    q.shared = features->data();
    q.keep = features;
    q.rows = n;
    q.channels = c;
    q.cache_key = stable_key;
    return q;
  }

 private:
  FourierSpec spec_;
  std::vector<int64_t> dims_;
  std::string key_;
};

// Optical flow queries the latents with the preprocessed inputs themselves.
class InputQueries final : public QueryBuilder {
 public:
  explicit InputQueries(int64_t channels) : channels_(channels) {}
  int64_t channels() const override { return channels_; }
  int64_t num_points(const DecodeContext& ctx) const override { return ctx.inputs->sequence.shape[1]; }
  DecoderQueries Build(DecodeContext& ctx, const std::vector<int64_t>* points) const override {
    const BackendTensor& seq = ctx.inputs->sequence;
    const int64_t rows = seq.shape[1];
    DecoderQueries q;
    q.channels = channels_;
    if (points == nullptr) {  // the layer only reads its queries
      q.per_item = seq;
      q.rows = rows;
      return q;
    }
    const int64_t n = static_cast<int64_t>(points->size());
    q.per_item = AllocateTensor(ctx.backend, {ctx.batch, n, channels_});
    q.rows = n;
    GatherRowsOp gather;
    gather.dst = q.per_item.data();
    gather.src = seq.data();
    gather.indices = points->data();
    gather.count = n;
    gather.batch = ctx.batch;
    gather.src_rows = rows;
    gather.cols = channels_;
    ctx.backend.Run(gather);
    return q;
  }

 private:
  int64_t channels_;
};

// Query rows per chunk of a per-item decoder query block: each query row attends to the latents
// alone and every op after the attention is row-wise, so a long block (optical flow queries with
// every pixel: 182,528 rows at 368x496, 2 million for a 1920x1080 pair) runs in chunks that bound
// the layer's intermediates (projections, attention output, the MLP's widened rows) by the chunk
// instead of the image, with the same values as one pass. PERCEIVER_DECODER_CHUNK_ROWS overrides
// it (the chunked == unchunked test; memory tuning); read once per decode.
constexpr int64_t kDecoderChunkRows = 16384;

int64_t DecoderChunkRows() {
  if (const char* env = std::getenv("PERCEIVER_DECODER_CHUNK_ROWS")) {
    const long long rows = std::strtoll(env, nullptr, 10);
    if (rows > 0) return rows;
  }
  return kDecoderChunkRows;
}

BackendTensor CrossAttendOnce(DecodeContext& ctx, const CrossAttentionDecoderSpec& spec, const DecoderQueries& queries,
                              const BackendTensor& latents);

BackendTensor CrossAttend(DecodeContext& ctx, const CrossAttentionDecoderSpec& spec, const DecoderQueries& queries,
                          const BackendTensor& latents) {
  const int64_t chunk = DecoderChunkRows(), n = queries.rows;
  // Shared blocks keep their cached projection whole; attention weights are asked for whole.
  if (queries.is_shared() || ctx.attentions != nullptr || n <= chunk) return CrossAttendOnce(ctx, spec, queries, latents);
  Backend& be = ctx.backend;
  const int64_t batch = ctx.batch, c = queries.channels;
  BackendTensor out;
  int64_t out_c = 0;
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    DecoderQueries part;
    part.per_item = AllocateTensor(be, {batch, rows, c});
    part.rows = rows;
    part.channels = c;
    const int64_t shape[3] = {batch, rows, c}, src[3] = {n * c, c, 1}, dst[3] = {rows * c, c, 1};
    RunCopy(be, part.per_item.data(), dst, queries.per_item.data() + r0 * c, src, shape, 3);
    const BackendTensor y = CrossAttendOnce(ctx, spec, part, latents);
    if (r0 == 0) {
      out_c = y.shape[2];
      out = AllocateTensor(be, {batch, n, out_c});
    }
    const int64_t out_shape[3] = {batch, rows, out_c}, from[3] = {rows * out_c, out_c, 1}, to[3] = {n * out_c, out_c, 1};
    RunCopy(be, out.data() + r0 * out_c, to, y.data(), from, out_shape, 3);
  }
  return out;
}

BackendTensor CrossAttendOnce(DecodeContext& ctx, const CrossAttentionDecoderSpec& spec, const DecoderQueries& queries,
                              const BackendTensor& latents) {
  LayerQueries q;
  if (queries.is_shared()) {
    q.shared = queries.shared;
    q.shared_rows = queries.rows;
    q.cache_key = queries.cache_key;
  } else {
    q.per_item = &queries.per_item;
  }
  BackendTensor out = RunPerceiverLayer(ctx.backend, spec.layer, ctx.eps, ctx.batch, q, &latents, KeyPadding{}, ctx.attentions);
  return spec.final_layer.present() ? ApplyLinear(ctx.backend, spec.final_layer, out) : out;
}

const std::vector<int64_t>* RequestedPoints(const DecodeContext& ctx, const std::string& modality, int64_t total) {
  auto it = ctx.request.points.find(modality);
  if (it == ctx.request.points.end()) return nullptr;
  CheckPoints(it->second, total, modality);
  return &it->second;
}

// transformers' PerceiverBasicDecoder: queries cross-attend to the latents, [batch, points, channels].
class BasicDecoder final : public Decoder {
 public:
  BasicDecoder(CrossAttentionDecoderSpec cross, std::unique_ptr<QueryBuilder> queries) : cross_(std::move(cross)), queries_(std::move(queries)) {}

  Decoded Run(DecodeContext& ctx, const BackendTensor& latents) const override {
    for (const auto& [name, pts] : ctx.request.points) {
      if (!name.empty()) ThrowInvalidArgument(PointsArg(name), "no modality name (this model decodes a single output)", "\"" + name + "\"");
    }
    const int64_t total = queries_->num_points(ctx);
    const std::vector<int64_t>* points = RequestedPoints(ctx, "", total);
    BackendTensor out = CrossAttend(ctx, cross_, queries_->Build(ctx, points), latents);
    Decoded d;
    d.modality_sizes = {{"", out.shape[1]}};
    d.output_shape = {ctx.batch, out.shape[1], out.shape[2]};
    d.values = out;
    return d;
  }

 private:
  CrossAttentionDecoderSpec cross_;
  std::unique_ptr<QueryBuilder> queries_;
};

// Whether the request subsampled the single output's points (the shapes then stay [batch, n, c]).
bool Subsampled(const DecodeContext& ctx) { return ctx.request.points.count("") != 0; }

// transformers' PerceiverClassificationDecoder.
class ClassificationDecoder final : public Decoder {
 public:
  explicit ClassificationDecoder(std::unique_ptr<Decoder> decoder) : decoder_(std::move(decoder)) {}

  Decoded Run(DecodeContext& ctx, const BackendTensor& latents) const override {
    Decoded d = decoder_->Run(ctx, latents);
    const int64_t batch = ctx.batch, n = d.values.shape[1], c = d.values.shape[2];
    BackendTensor first = AllocateTensor(ctx.backend, {batch, 1, c});
    const int64_t shape[2] = {batch, c}, src[2] = {n * c, 1}, dst[2] = {c, 1};
    RunCopy(ctx.backend, first.data(), dst, d.values.data(), src, shape, 2);
    d.values = first;
    d.modality_sizes = {{"", 1}};
    d.output_shape = {batch, c};
    return d;
  }

 private:
  std::unique_ptr<Decoder> decoder_;
};

// transformers' PerceiverOpticalFlowDecoder.
class OpticalFlowDecoder final : public Decoder {
 public:
  OpticalFlowDecoder(std::unique_ptr<Decoder> decoder, float rescale_factor, std::vector<int64_t> output_image_shape)
      : decoder_(std::move(decoder)), rescale_factor_(rescale_factor), output_image_shape_(std::move(output_image_shape)) {}

  Decoded Run(DecodeContext& ctx, const BackendTensor& latents) const override {
    Decoded d = decoder_->Run(ctx, latents);
    const int64_t n = d.values.shape[1], c = d.values.shape[2], h = output_image_shape_[0], w = output_image_shape_[1];
    if (!Subsampled(ctx) && h * w != n) {
      ThrowInvalidArgument("inputs",
                           "frames of config.train_size, " + std::to_string(h) + "x" + std::to_string(w) + " (decode with subsampledOutputPoints for other sizes)",
                           "frames that give a " + std::to_string(n) + "-point flow field");
    }
    ScaleOp scale;
    scale.x = d.values.data();
    scale.n = d.values.size();
    scale.alpha = 1.0f / rescale_factor_;
    ctx.backend.Run(scale);
    if (!Subsampled(ctx)) d.output_shape = {ctx.batch, h, w, c};
    return d;
  }

 private:
  std::unique_ptr<Decoder> decoder_;
  float rescale_factor_;
  std::vector<int64_t> output_image_shape_;
};

// transformers' PerceiverBasicVideoAutoencodingDecoder.
class BasicVideoAutoencodingDecoder final : public Decoder {
 public:
  BasicVideoAutoencodingDecoder(std::unique_ptr<Decoder> decoder, std::vector<int64_t> output_shape)
      : decoder_(std::move(decoder)), output_shape_(std::move(output_shape)) {}

  Decoded Run(DecodeContext& ctx, const BackendTensor& latents) const override {
    Decoded d = decoder_->Run(ctx, latents);
    if (!Subsampled(ctx)) d.output_shape = {output_shape_[0], output_shape_[1], output_shape_[2], output_shape_[3], d.values.shape[2]};
    return d;
  }

 private:
  std::unique_ptr<Decoder> decoder_;
  std::vector<int64_t> output_shape_;
};

class MultimodalDecoder final : public Decoder {
 public:
  MultimodalDecoder(CrossAttentionDecoderSpec cross, std::vector<MultimodalDecoderModality> modalities, int64_t channels)
      : cross_(std::move(cross)), modalities_(std::move(modalities)), channels_(channels) {}

  std::vector<std::string> modalities() const override {
    std::vector<std::string> names;
    for (const auto& m : modalities_) names.push_back(m.name);
    return names;
  }

  Decoded Run(DecodeContext& ctx, const BackendTensor& latents) const override {
    for (const auto& [name, pts] : ctx.request.points) {
      const bool known = std::any_of(modalities_.begin(), modalities_.end(), [&](const auto& m) { return m.name == name; });
      if (!known) ThrowInvalidArgument(PointsArg(name), "an output modality of this model", "\"" + name + "\"");
    }
    Backend& be = ctx.backend;
    std::vector<DecoderQueries> parts;
    Decoded d;
    int64_t rows = 0;
    bool all_shared = true;
    for (const MultimodalDecoderModality& m : modalities_) {
      const std::vector<int64_t>* points = RequestedPoints(ctx, m.name, m.queries->num_points(ctx));
      parts.push_back(m.queries->Build(ctx, points));
      all_shared = all_shared && parts.back().is_shared();
      d.modality_sizes.emplace_back(m.name, parts.back().rows);
      rows += parts.back().rows;
    }
    // Each modality's queries, then its learned padding up to the common width; one block for
    // the whole batch when no modality depends on the input.
    const int64_t batch = ctx.batch, c = channels_, copies = all_shared ? 1 : batch;
    BackendTensor joined = AllocateTensor(be, {copies, rows, c});
    int64_t row0 = 0;
    for (size_t i = 0; i < modalities_.size(); ++i) {
      const DecoderQueries& q = parts[i];
      const int64_t n = q.rows, cm = q.channels;
      float* dst = joined.data() + row0 * c;
      const int64_t shape[3] = {copies, n, cm}, dst_strides[3] = {rows * c, c, 1};
      const int64_t src[3] = {q.is_shared() ? 0 : n * cm, cm, 1};
      RunCopy(be, dst, dst_strides, q.is_shared() ? q.shared : q.per_item.data(), src, shape, 3);
      if (c > cm) {
        const int64_t pad_shape[3] = {copies, n, c - cm}, pad_src[3] = {0, 0, 1};
        RunCopy(be, dst + cm, dst_strides, modalities_[i].padding->values(), pad_src, pad_shape, 3);
      }
      row0 += n;
    }
    parts.clear();
    DecoderQueries queries;
    queries.rows = rows;
    queries.channels = c;
    if (all_shared) {
      queries.shared = joined.data();
      queries.keep = joined.buffer;
    } else {
      queries.per_item = joined;
    }
    d.values = CrossAttend(ctx, cross_, queries, latents);
    d.output_shape = d.values.shape;
    return d;
  }

 private:
  CrossAttentionDecoderSpec cross_;
  std::vector<MultimodalDecoderModality> modalities_;
  int64_t channels_;
};

// transformers' PerceiverProjectionDecoder: the mean latent through a linear classifier.
class ProjectionDecoder final : public Decoder {
 public:
  explicit ProjectionDecoder(LinearWeights classifier) : classifier_(classifier) {}
  Decoded Run(DecodeContext& ctx, const BackendTensor& latents) const override {
    if (!ctx.request.points.empty()) ThrowInvalidArgument("subsampledOutputPoints", "none (a projection decoder has no output points to subsample)", "some");
    const int64_t batch = latents.shape[0], n = latents.shape[1], d = latents.shape[2];
    BackendTensor mean = AllocateTensor(ctx.backend, {batch, 1, d});
    MeanRowsOp op;
    op.x = latents.data();
    op.batch = batch;
    op.n = n;
    op.cols = d;
    op.y = mean.data();
    ctx.backend.Run(op);
    Decoded out;
    out.values = ApplyLinear(ctx.backend, classifier_, mean);
    out.modality_sizes = {{"", 1}};
    out.output_shape = {batch, classifier_.out};
    return out;
  }

 private:
  LinearWeights classifier_;
};

}  // namespace

std::unique_ptr<QueryBuilder> MakeTrainableQueries(WeightRef table, int64_t positions, int64_t channels) {
  return std::make_unique<TrainableQueries>(std::move(table), positions, channels);
}
std::unique_ptr<QueryBuilder> MakeFourierQueries(FourierSpec spec, std::vector<int64_t> dims, std::string key) {
  return std::make_unique<FourierQueries>(std::move(spec), std::move(dims), std::move(key));
}
std::unique_ptr<QueryBuilder> MakeInputQueries(int64_t channels) { return std::make_unique<InputQueries>(channels); }
std::unique_ptr<Decoder> MakeBasicDecoder(CrossAttentionDecoderSpec cross, std::unique_ptr<QueryBuilder> queries) {
  return std::make_unique<BasicDecoder>(std::move(cross), std::move(queries));
}
std::unique_ptr<Decoder> MakeClassificationDecoder(std::unique_ptr<Decoder> decoder) {
  return std::make_unique<ClassificationDecoder>(std::move(decoder));
}
std::unique_ptr<Decoder> MakeOpticalFlowDecoder(std::unique_ptr<Decoder> decoder, float rescale_factor, std::vector<int64_t> output_image_shape) {
  return std::make_unique<OpticalFlowDecoder>(std::move(decoder), rescale_factor, std::move(output_image_shape));
}
std::unique_ptr<Decoder> MakeBasicVideoAutoencodingDecoder(std::unique_ptr<Decoder> decoder, std::vector<int64_t> output_shape) {
  return std::make_unique<BasicVideoAutoencodingDecoder>(std::move(decoder), std::move(output_shape));
}
std::unique_ptr<Decoder> MakeMultimodalDecoder(CrossAttentionDecoderSpec cross, std::vector<MultimodalDecoderModality> modalities,
                                               int64_t query_channels) {
  return std::make_unique<MultimodalDecoder>(std::move(cross), std::move(modalities), query_channels);
}
std::unique_ptr<Decoder> MakeProjectionDecoder(LinearWeights classifier) {
  return std::make_unique<ProjectionDecoder>(classifier);
}

}  // namespace perceiver
