#include "model/perceiver_graph.h"

#include <string>
#include <utility>

#include "core/engine_error.h"

namespace perceiver {

PerceiverGraph::PerceiverGraph(std::unique_ptr<Backend> backend, ModelParts parts)
    : backend_(std::move(backend)), parts_(std::move(parts)) {}

HostTensor PerceiverGraph::ToHost(const BackendTensor& t, std::string name) {
  HostTensor h;
  h.name = std::move(name);
  h.shape = t.shape;
  h.data.resize(static_cast<size_t>(t.size()));
  backend_->CopyToHost(h.data.data(), t.data(), h.data.size());
  return h;
}

std::vector<HostTensor> PerceiverGraph::ToHost(const std::vector<BackendTensor>& list) {
  std::vector<HostTensor> out;
  for (const BackendTensor& t : list) out.push_back(ToHost(t));
  return out;
}

std::unique_lock<std::mutex> PerceiverGraph::Exclusive() {
  return backend_->serializes_calls() ? std::unique_lock<std::mutex>(call_mutex_) : std::unique_lock<std::mutex>();
}

EncodeResult PerceiverGraph::Encode(const EncodeRequest& r) {
  auto exclusive = Exclusive();
  Backend& be = *backend_;
  if (r.batch < 1) ThrowInvalidArgument("inputs: the batch must hold at least one item");
  if (r.inputs.empty()) ThrowInvalidArgument("inputs: missing");
  if (!parts_.multimodal_inputs) {
    if (r.inputs.size() != 1 || r.inputs.begin()->first != "") {
      ThrowInvalidArgument("inputs: this model takes a single input tensor, not named modalities");
    }
  }

  // Preprocessor: what the latents cross-attend to, [batch, rows, channels].
  PreprocessContext pre{be, cache_, r};
  EncoderInputs inputs = parts_.preprocessor->Run(pre, "", r.inputs.begin()->second);
  const int64_t batch = r.batch, rows = inputs.sequence.shape[1];
  if (!r.key_mask.empty()) {
    if (static_cast<int64_t>(r.key_mask.size()) != batch * rows) {
      ThrowInvalidArgument("attentionMask: expected " + std::to_string(batch * rows) + " values ([" + std::to_string(batch) +
                           ", " + std::to_string(rows) + "]), got " + std::to_string(r.key_mask.size()));
    }
    for (int64_t b = 0; b < batch; ++b) {
      bool any = false;
      for (int64_t j = 0; j < rows && !any; ++j) any = r.key_mask[b * rows + j] != 0;
      if (!any) ThrowInvalidArgument("attentionMask: row " + std::to_string(b) + " masks every position");
    }
  }

  // Encoder.
  const EncoderSpec& enc = parts_.encoder;
  const float eps = parts_.layer_norm_eps;
  const int64_t n = enc.num_latents, d = enc.d_latents;
  EncodeResult result;
  std::vector<BackendTensor> self_attn, cross_attn;
  BackendTensor latents = AllocateTensor(be, {batch, n, d});
  CopyIntoColumns(be, enc.latents, 0, batch, n, d, latents.data(), d, 0);
  RunPerceiverLayer(be, enc.cross_attention, eps, latents, &inputs.sequence, r.key_mask.empty() ? nullptr : r.key_mask.data(),
                    r.output_attentions ? &cross_attn : nullptr);
  for (int64_t block = 0; block < enc.num_blocks; ++block) {
    for (const PerceiverLayerSpec& layer : enc.self_attends) {
      if (r.output_hidden_states) result.hidden_states.push_back(ToHost(latents));
      RunPerceiverLayer(be, layer, eps, latents, nullptr, nullptr, r.output_attentions ? &self_attn : nullptr);
    }
    if (r.output_hidden_states) result.hidden_states.push_back(ToHost(latents));
  }
  result.last_hidden_state = ToHost(latents);
  result.attentions = ToHost(self_attn);
  result.cross_attentions = ToHost(cross_attn);

  result.encoding = std::make_shared<Encoding>();
  result.encoding->batch = batch;
  result.encoding->latents = latents;
  if (parts_.decoder_queries_inputs) result.encoding->inputs = std::move(inputs);
  be.Synchronize();
  return result;
}

DecodeResult PerceiverGraph::Decode(const Encoding& encoding, const DecodeRequest& r) {
  if (!parts_.decoder) ThrowInvalidArgument("decode: this model has no decoder");
  auto exclusive = Exclusive();
  Backend& be = *backend_;
  std::vector<BackendTensor> cross_attn;
  DecodeContext ctx{be, cache_, r, &encoding.inputs, encoding.batch, parts_.layer_norm_eps,
                    r.output_attentions ? &cross_attn : nullptr};
  Decoded decoded = parts_.decoder->Run(ctx, encoding.latents);

  DecodeResult result;
  if (!parts_.modality_postprocessors.empty()) {
    for (NamedOutput& out : RunMultimodalPostprocessor(be, parts_.modality_postprocessors, decoded)) {
      HostTensor h = ToHost(out.values, out.name);
      h.shape = out.shape;
      result.logits.push_back(std::move(h));
    }
  } else if (parts_.postprocessor) {
    NamedOutput out = parts_.postprocessor->Run(be, "", decoded.values);
    HostTensor h = ToHost(out.values);
    h.shape = out.shape;
    result.logits.push_back(std::move(h));
  } else {
    HostTensor h = ToHost(decoded.values);
    h.shape = decoded.output_shape;
    result.logits.push_back(std::move(h));
  }
  result.cross_attentions = ToHost(cross_attn);
  be.Synchronize();
  return result;
}

}  // namespace perceiver
