#include "model/perceiver_graph.h"

#include <string>
#include <utility>

#include <cmath>

#include "core/engine_error.h"

namespace perceiver {

// Weight uploads were queued on the backend's stream while the spec was read: wait for them once.
void InputArray::CheckFinite() const {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      ThrowInvalidArgument(argument, "finite values", std::string(std::isnan(values[i]) ? "NaN" : "Inf") + " at flat index " + std::to_string(i));
    }
  }
}

PerceiverGraph::PerceiverGraph(std::unique_ptr<Backend> backend, ModelParts parts) : parts_(std::move(parts)) {
  auto arena = std::make_unique<ArenaBackend>(std::move(backend));
  arena_ = arena.get();
  backend_ = std::move(arena);
  backend_->Synchronize();
}

namespace {

// What decides a call's allocations, for the arena (arena_backend.h): the inputs' shapes and
// kinds, the mask's presence and the outputs asked for. A key that misses something costs a
// re-plan, never a wrong result: the arena checks every replay.
void AppendKey(std::string& key, const EncodeRequest& r) {
  key += "e" + std::to_string(r.batch);
  for (const auto& [name, input] : r.inputs) {
    key += "|" + name + (input.integer ? ":i" : ":f") + (input.on_backend() ? "d" : "h");
    for (int64_t d : input.shape) key += "," + std::to_string(d);
  }
  key += r.key_mask.empty() ? "|nomask" : "|mask";
  key += r.interpolate_pos_encoding ? "|interp" : "";
  key += r.output_hidden_states ? "|hidden" : "";
  key += r.output_attentions ? "|attn" : "";
  key += r.outputs_on_backend ? "|resident" : "";
}

void AppendKey(std::string& key, const DecodeRequest& r, int64_t batch) {
  key += "/d" + std::to_string(batch);
  for (const auto& [name, points] : r.points) key += "|" + name + ":" + std::to_string(points.size());
  key += r.output_attentions ? "|attn" : "";
  key += r.outputs_on_backend ? "|resident" : "";
}

// Calls of at most this batch may be recorded once and replayed (CUDA graphs): their time is
// launches, not arithmetic. Outputs kept in backend memory get new addresses on every call, so
// such a call is never replayed.
constexpr int64_t kReplayableBatch = 8;
bool Replayable(const EncodeRequest& r) { return r.batch <= kReplayableBatch && !r.outputs_on_backend; }

constexpr const char* kUnusable =
    "the model is unusable from now on: dispose it and load it again (after a sticky CUDA error the device stays "
    "unusable for this whole process; restart it to use the GPU again)";

}  // namespace

template <typename F>
auto PerceiverGraph::Guarded(F&& call) -> decltype(call()) {
  {
    std::lock_guard<std::mutex> lock(fault_mutex_);
    if (!fault_.empty()) {
      throw EngineError(ErrorCode::kBackendUnavailable, "an earlier call failed with a device fault (" + fault_ + "); " + kUnusable);
    }
  }
  try {
    return call();
  } catch (const DeviceFault& e) {
    {
      std::lock_guard<std::mutex> lock(fault_mutex_);
      if (fault_.empty()) fault_ = e.what();
    }
    throw EngineError(ErrorCode::kInternal, std::string(e.what()) + "; " + kUnusable);
  }
}

OutputTensor PerceiverGraph::Output(const BackendTensor& t, bool on_backend, std::string name, const std::vector<int64_t>* shape) {
  OutputTensor out;
  out.name = std::move(name);
  out.shape = shape != nullptr ? *shape : t.shape;
  if (on_backend) {
    // Every tensor the graph outputs is written once and only read afterwards (each layer writes
    // a new hidden state), so the output shares its buffer.
    out.resident = t;
    out.resident.shape = out.shape;
    return out;
  }
  // Queued: the call waits once for all its outputs (the Synchronize at its end).
  out.data.resize(static_cast<size_t>(t.size()));
  backend_->CopyToHostDeferred(out.data.data(), t.data(), out.data.size());
  return out;
}

std::vector<OutputTensor> PerceiverGraph::Outputs(const std::vector<BackendTensor>& list, bool on_backend) {
  std::vector<OutputTensor> out;
  for (const BackendTensor& t : list) out.push_back(Output(t, on_backend));
  return out;
}

BackendTensor PerceiverGraph::Upload(const std::vector<float>& host, std::vector<int64_t> shape) {
  return Guarded([&] {
    auto exclusive = Exclusive();
    BackendTensor t = AllocateTensor(*backend_, std::move(shape));
    if (static_cast<size_t>(t.size()) != host.size()) ThrowInvalidArgument("tensor", std::to_string(t.size()) + " values (its shape)", std::to_string(host.size()));
    backend_->CopyFromHost(t.data(), host.data(), host.size());
    backend_->Synchronize();
    return t;
  });
}

void PerceiverGraph::Download(const BackendTensor& t, float* host) {
  Guarded([&] {
    auto exclusive = Exclusive();
    backend_->CopyToHost(host, t.data(), static_cast<size_t>(t.size()));
  });
}

std::unique_lock<std::mutex> PerceiverGraph::Exclusive() {
  return backend_->serializes_calls() ? std::unique_lock<std::mutex>(call_mutex_) : std::unique_lock<std::mutex>();
}

template <typename F>
auto PerceiverGraph::OneCall(const std::string& key, bool replayable, F&& queue) -> decltype(queue()) {
  return Guarded([&] {
    auto exclusive = Exclusive();
    try {
      decltype(queue()) result;
      {
        ArenaBackend::Call call(*arena_, key);
        backend_->BeginCall(key, replayable);
        result = queue();
      }
      // The one wait of the call: every output copy was queued (CopyToHostDeferred).
      backend_->Synchronize();
      return result;
    } catch (...) {
      backend_->CancelDeferred();  // their destinations are gone with the result
      throw;
    }
  });
}

EncodeResult PerceiverGraph::Encode(const EncodeRequest& r) {
  std::string key;
  AppendKey(key, r);
  return OneCall(key, Replayable(r), [&] { return EncodeQueued(r); });
}

DecodeResult PerceiverGraph::Decode(const Encoding& encoding, const DecodeRequest& r) {
  if (!parts_.decoder) ThrowInvalidArgument("decode", "a model with a decoder", "a model without one");
  std::string key;
  AppendKey(key, r, encoding.batch);
  return OneCall(key, encoding.batch <= kReplayableBatch && !r.outputs_on_backend, [&] { return DecodeQueued(encoding, r); });
}

ForwardResult PerceiverGraph::Forward(const EncodeRequest& encode, const DecodeRequest& decode) {
  std::string key;
  AppendKey(key, encode);
  if (has_decoder()) AppendKey(key, decode, encode.batch);
  return OneCall(key, Replayable(encode) && !decode.outputs_on_backend, [&] {
    ForwardResult result;
    result.encoded = EncodeQueued(encode);
    if (has_decoder()) result.decoded = DecodeQueued(*result.encoded.encoding, decode);
    result.encoded.encoding.reset();  // within the arena's call: its latents are the arena's to reuse
    return result;
  });
}

EncodeResult PerceiverGraph::EncodeQueued(const EncodeRequest& r) {
  Backend& be = *backend_;
  if (r.batch < 1) ThrowInvalidArgument("inputs", "a batch of at least one item", std::to_string(r.batch));
  if (r.inputs.empty()) ThrowInvalidArgument("inputs", "at least one input", "none");
  for (const auto& [name, input] : r.inputs) input.CheckFinite();
  if (!parts_.multimodal_inputs) {
    if (r.inputs.size() != 1 || r.inputs.begin()->first != "") {
      std::string names;
      for (const auto& [name, input] : r.inputs) names += (names.empty() ? "\"" : ", \"") + name + "\"";
      ThrowInvalidArgument("inputs", "a single input tensor (this model has no modalities)", "inputs named " + names);
    }
  }

  // Preprocessor: what the latents cross-attend to, [batch, rows, channels].
  PreprocessContext pre{be, cache_, r};
  EncoderInputs inputs = parts_.preprocessor->Run(pre, "", r.inputs.begin()->second);
  const int64_t batch = r.batch, rows = inputs.sequence.shape[1];
  KeyPadding padding;
  std::vector<int64_t> lengths;
  if (!r.key_mask.empty()) {
    if (static_cast<int64_t>(r.key_mask.size()) != batch * rows) {
      ThrowInvalidArgument("attentionMask", std::to_string(batch * rows) + " values ([" + std::to_string(batch) + ", " + std::to_string(rows) + "])",
                           std::to_string(r.key_mask.size()));
    }
    // A padded batch's mask (ones, then zeros) becomes per-item lengths: attention then skips
    // the padded keys instead of masking them.
    bool prefix = true;
    for (int64_t b = 0; b < batch; ++b) {
      const uint8_t* row = r.key_mask.data() + b * rows;
      int64_t n = 0;
      while (n < rows && row[n] != 0) ++n;
      bool any = n > 0;
      for (int64_t j = n; j < rows; ++j) {
        if (row[j] != 0) prefix = false, any = true;
      }
      if (!any) ThrowInvalidArgument("attentionMask", "at least one unmasked position per row", "row " + std::to_string(b) + " with every position masked");
      lengths.push_back(n);
    }
    if (prefix) padding.lengths = lengths.data();
    else padding.mask = r.key_mask.data();
  }

  // Encoder.
  const EncoderSpec& enc = parts_.encoder;
  const float eps = parts_.layer_norm_eps;
  const int64_t n = enc.num_latents, d = enc.d_latents;
  EncodeResult result;
  std::vector<BackendTensor> self_attn, cross_attn;
  // The latents are the same for every item: their LayerNorm and query projection are done once
  // (layers.cc), and they join the batch only through the layer's residual.
  LayerQueries initial;
  initial.shared = enc.latents->values();
  initial.shared_rows = n;
  initial.cache_key = "encoder.latents";
  (void)d;
  BackendTensor latents = RunPerceiverLayer(be, enc.cross_attention, eps, batch, initial, &inputs.sequence, padding,
                                            r.output_attentions ? &cross_attn : nullptr);
  const bool on_backend = r.outputs_on_backend;
  for (int64_t block = 0; block < enc.num_blocks; ++block) {
    for (const PerceiverLayerSpec& layer : enc.self_attends) {
      // Each layer writes a new latents tensor, so a hidden state needs no copy.
      if (r.output_hidden_states) result.hidden_states.push_back(Output(latents, on_backend));
      LayerQueries hidden;
      hidden.per_item = &latents;
      latents = RunPerceiverLayer(be, layer, eps, batch, hidden, nullptr, KeyPadding{}, r.output_attentions ? &self_attn : nullptr);
    }
    if (r.output_hidden_states) result.hidden_states.push_back(Output(latents, on_backend));
  }
  // The final latents are only read from here on (decode cross-attends to them), so a
  // DeviceTensor shares them with the encoding.
  result.last_hidden_state = Output(latents, on_backend);
  result.attentions = Outputs(self_attn, on_backend);
  result.cross_attentions = Outputs(cross_attn, on_backend);

  result.encoding = std::make_shared<Encoding>();
  result.encoding->batch = batch;
  result.encoding->latents = latents;
  if (parts_.decoder_queries_inputs) result.encoding->inputs = std::move(inputs);
  return result;
}

DecodeResult PerceiverGraph::DecodeQueued(const Encoding& encoding, const DecodeRequest& r) {
  Backend& be = *backend_;
  std::vector<BackendTensor> cross_attn;
  DecodeContext ctx{be, cache_, r, &encoding.inputs, encoding.batch, parts_.layer_norm_eps,
                    r.output_attentions ? &cross_attn : nullptr};
  Decoded decoded = parts_.decoder->Run(ctx, encoding.latents);

  // Every logits buffer is made by this call and written by nothing after it.
  const bool on_backend = r.outputs_on_backend;
  DecodeResult result;
  if (parts_.multimodal_postprocessor) {
    for (NamedOutput& out : parts_.multimodal_postprocessor->Run(be, decoded)) {
      result.logits.push_back(Output(out.values, on_backend, out.name, &out.shape));
    }
  } else if (parts_.postprocessor) {
    NamedOutput out = parts_.postprocessor->Run(be, "", decoded.values);
    result.logits.push_back(Output(out.values, on_backend, "", &out.shape));
  } else {
    result.logits.push_back(Output(decoded.values, on_backend, "", &decoded.output_shape));
  }
  result.cross_attentions = Outputs(cross_attn, on_backend);
  return result;
}

}  // namespace perceiver
