#include "model/perceiver_graph.h"

#include <cmath>
#include <string>
#include <utility>

#include "core/engine_error.h"

namespace perceiver {

namespace {

size_t Floats(int64_t a, int64_t b = 1, int64_t c = 1) { return static_cast<size_t>(a * b * c); }

}  // namespace

PerceiverGraph::PerceiverGraph(std::unique_ptr<Backend> backend, ModelSpec spec)
    : backend_(std::move(backend)), spec_(std::move(spec)) {}

void PerceiverGraph::ValidateRequest(const ForwardRequest& r) const {
  if (r.batch <= 0) ThrowInvalidArgument("inputs: the batch must hold at least one item");
  if (r.seq <= 0) ThrowInvalidArgument("inputs: the sequence must hold at least one element");
  if (spec_.preprocessor == PreprocessorKind::kText) {
    const TextPreprocessorSpec& t = spec_.text;
    if (r.seq > t.max_positions) {
      ThrowInvalidArgument("inputs: sequence length " + std::to_string(r.seq) +
                           " exceeds max_position_embeddings " + std::to_string(t.max_positions));
    }
    if (r.token_ids.size() != Floats(r.batch, r.seq)) ThrowInvalidArgument("inputs: token id count does not match shape");
    for (size_t i = 0; i < r.token_ids.size(); ++i) {
      const int32_t id = r.token_ids[i];
      if (id < 0 || id >= t.vocab_size) {
        ThrowInvalidArgument("inputs: token id " + std::to_string(id) + " at position " + std::to_string(i) +
                             " is outside the vocabulary [0, " + std::to_string(t.vocab_size) + ")");
      }
    }
  }
  if (!r.key_mask.empty()) {
    if (r.key_mask.size() != Floats(r.batch, r.seq)) {
      ThrowInvalidArgument("attentionMask: expected " + std::to_string(r.batch * r.seq) + " values");
    }
    for (int64_t b = 0; b < r.batch; ++b) {
      bool any = false;
      for (int64_t j = 0; j < r.seq && !any; ++j) any = r.key_mask[b * r.seq + j] != 0;
      if (!any) ThrowInvalidArgument("attentionMask: row " + std::to_string(b) + " masks every position");
    }
  }
}

HostTensor PerceiverGraph::ToHost(const float* data, std::vector<int64_t> shape) {
  HostTensor t;
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  t.shape = std::move(shape);
  t.data.resize(n);
  backend_->CopyToHost(t.data.data(), data, n);
  return t;
}

void PerceiverGraph::RunLayer(const PerceiverLayerSpec& L, BackendBuffer& hidden, int64_t batch, int64_t nq,
                              const float* inputs, int64_t nk, const uint8_t* key_mask,
                              std::vector<HostTensor>* attention_out) {
  Backend& be = *backend_;
  const float eps = spec_.layer_norm_eps;
  const int64_t rows_q = batch * nq;

  // Attention block.
  auto normed_q = be.Allocate(Floats(rows_q, L.q_dim));
  be.LayerNorm(hidden.data(), rows_q, L.q_dim, L.layernorm1.gamma, L.layernorm1.beta, eps, normed_q->data());
  const float* kv_source = normed_q->data();
  std::unique_ptr<BackendBuffer> normed_kv;
  if (L.is_cross_attention) {
    normed_kv = be.Allocate(Floats(batch, nk, L.kv_dim));
    be.LayerNorm(inputs, batch * nk, L.kv_dim, L.layernorm2.gamma, L.layernorm2.beta, eps, normed_kv->data());
    kv_source = normed_kv->data();
  } else {
    nk = nq;
  }
  const int64_t rows_k = batch * nk;
  auto q = be.Allocate(Floats(rows_q, L.qk_channels));
  auto k = be.Allocate(Floats(rows_k, L.qk_channels));
  auto v = be.Allocate(Floats(rows_k, L.v_channels));
  be.Linear(normed_q->data(), rows_q, L.q_dim, L.query.weight, L.query.bias, L.qk_channels, q->data());
  be.Linear(kv_source, rows_k, L.kv_dim, L.key.weight, L.key.bias, L.qk_channels, k->data());
  be.Linear(kv_source, rows_k, L.kv_dim, L.value.weight, L.value.bias, L.v_channels, v->data());
  normed_q.reset();
  normed_kv.reset();

  AttentionArgs args;
  args.batch = batch;
  args.heads = L.num_heads;
  args.nq = nq;
  args.nk = nk;
  args.dqk = L.qk_channels / L.num_heads;
  args.dv = L.v_channels / L.num_heads;
  args.q = q->data();
  args.k = k->data();
  args.v = v->data();
  args.key_mask = L.is_cross_attention ? key_mask : nullptr;
  args.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(args.dqk)));
  auto context = be.Allocate(Floats(rows_q, L.v_channels));
  args.out = context->data();
  std::unique_ptr<BackendBuffer> probs;
  if (attention_out != nullptr) {
    probs = be.Allocate(Floats(batch * L.num_heads, nq, nk));
    args.probs = probs->data();
  }
  be.Attention(args);
  if (probs) attention_out->push_back(ToHost(probs->data(), {batch, L.num_heads, nq, nk}));
  q.reset();
  k.reset();
  v.reset();

  // Output projection (back to the query width) and the query residual.
  auto attended = be.Allocate(Floats(rows_q, L.output.out));
  be.Linear(context->data(), rows_q, L.v_channels, L.output.weight, L.output.bias, L.output.out, attended->data());
  context.reset();
  if (L.use_query_residual) be.AddInPlace(attended->data(), hidden.data(), rows_q * L.q_dim);

  // MLP block: hidden = attended + mlp(layernorm(attended)).
  auto normed = be.Allocate(Floats(rows_q, L.q_dim));
  be.LayerNorm(attended->data(), rows_q, L.q_dim, L.layernorm.gamma, L.layernorm.beta, eps, normed->data());
  auto widened = be.Allocate(Floats(rows_q, L.mlp_dense1.out));
  be.Linear(normed->data(), rows_q, L.q_dim, L.mlp_dense1.weight, L.mlp_dense1.bias, L.mlp_dense1.out, widened->data());
  be.Gelu(widened->data(), rows_q * L.mlp_dense1.out);
  be.Linear(widened->data(), rows_q, L.mlp_dense1.out, L.mlp_dense2.weight, L.mlp_dense2.bias, L.q_dim, hidden.data());
  be.AddInPlace(hidden.data(), attended->data(), rows_q * L.q_dim);
}

ForwardResult PerceiverGraph::Forward(const ForwardRequest& r) {
  ValidateRequest(r);
  Backend& be = *backend_;
  ForwardResult result;
  const int64_t batch = r.batch;

  // Preprocessor: what the latents cross-attend to, [batch, seq, input_channels].
  auto inputs = be.Allocate(Floats(batch, r.seq, spec_.input_channels));
  if (spec_.preprocessor == PreprocessorKind::kText) {
    const TextPreprocessorSpec& t = spec_.text;
    be.EmbeddingLookup(r.token_ids.data(), batch, r.seq, t.embeddings, t.vocab_size, t.positions, t.d_model,
                       inputs->data());
  } else {
    ThrowInvalidArgument("this model has no input preprocessor the engine can run");
  }
  const uint8_t* key_mask = r.key_mask.empty() ? nullptr : r.key_mask.data();

  // Encoder.
  const EncoderSpec& enc = spec_.encoder;
  const int64_t n = enc.num_latents, d = enc.d_latents;
  auto latents = be.Allocate(Floats(batch, n, d));
  be.Broadcast(latents->data(), enc.latents, n * d, batch);
  std::vector<HostTensor>* self_attn = r.output_attentions ? &result.attentions : nullptr;
  std::vector<HostTensor>* cross_attn = r.output_attentions ? &result.cross_attentions : nullptr;
  RunLayer(enc.cross_attention, *latents, batch, n, inputs->data(), r.seq, key_mask, cross_attn);
  inputs.reset();
  for (int64_t block = 0; block < enc.num_blocks; ++block) {
    for (const PerceiverLayerSpec& layer : enc.self_attends) {
      if (r.output_hidden_states) result.hidden_states.push_back(ToHost(latents->data(), {batch, n, d}));
      RunLayer(layer, *latents, batch, n, nullptr, 0, nullptr, self_attn);
    }
    if (r.output_hidden_states) result.hidden_states.push_back(ToHost(latents->data(), {batch, n, d}));
  }
  result.last_hidden_state = ToHost(latents->data(), {batch, n, d});

  // Decoder.
  if (spec_.decoder == DecoderKind::kBasic) {
    const BasicDecoderSpec& dec = spec_.basic_decoder;
    const int64_t o = dec.num_queries, c = dec.query_channels;
    auto query = be.Allocate(Floats(batch, o, c));
    be.Broadcast(query->data(), dec.query_positions, o * c, batch);
    RunLayer(dec.cross_attention, *query, batch, o, latents->data(), n, nullptr, cross_attn);
    std::unique_ptr<BackendBuffer> decoded = std::move(query);
    int64_t width = c;
    if (dec.has_final_layer) {
      auto projected = be.Allocate(Floats(batch, o, dec.final_layer.out));
      be.Linear(decoded->data(), batch * o, c, dec.final_layer.weight, dec.final_layer.bias, dec.final_layer.out,
                projected->data());
      decoded = std::move(projected);
      width = dec.final_layer.out;
    }
    int64_t positions = o;
    if (dec.keep_first_position_only) {
      auto first = be.Allocate(Floats(batch, width));
      for (int64_t b = 0; b < batch; ++b) be.Copy(first->data() + b * width, decoded->data() + b * o * width, width);
      decoded = std::move(first);
      positions = 1;
    }
    if (spec_.postprocessor == PostprocessorKind::kEmbeddingDecoder) {
      const LinearWeights& p = spec_.embedding_decoder.projection;
      auto logits = be.Allocate(Floats(batch, positions, p.out));
      be.Linear(decoded->data(), batch * positions, p.in, p.weight, p.bias, p.out, logits->data());
      decoded = std::move(logits);
      width = p.out;
    }
    result.has_logits = true;
    result.logits = dec.keep_first_position_only ? ToHost(decoded->data(), {batch, width})
                                                 : ToHost(decoded->data(), {batch, positions, width});
  }
  be.Synchronize();
  return result;
}

}  // namespace perceiver
