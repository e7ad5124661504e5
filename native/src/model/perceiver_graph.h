// The Perceiver IO forward pass, written once against the Backend interface:
// preprocessor -> encoder (latent cross-attention, then blocks of latent self-attention)
// -> decoder (cross-attention from output queries to the latents) -> postprocessor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/model_spec.h"

namespace perceiver {

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

struct ForwardRequest {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> token_ids;  // [batch, seq], text models
  std::vector<uint8_t> key_mask;   // [batch, seq], 1 = attend; empty = attend everywhere
  bool output_hidden_states = false;
  bool output_attentions = false;
};

struct ForwardResult {
  bool has_logits = false;
  HostTensor logits;
  HostTensor last_hidden_state;
  std::vector<HostTensor> hidden_states;     // as transformers' hidden_states
  std::vector<HostTensor> attentions;        // latent self-attention weights, in order of application
  std::vector<HostTensor> cross_attentions;  // encoder cross-attention, then the decoder's
};

class PerceiverGraph {
 public:
  PerceiverGraph(std::unique_ptr<Backend> backend, ModelSpec spec);
  const ModelSpec& spec() const { return spec_; }
  Backend& backend() { return *backend_; }

  // Validates the request against the model (ranges, lengths, masks) and runs it.
  ForwardResult Forward(const ForwardRequest& request);

 private:
  void ValidateRequest(const ForwardRequest& request) const;
  // Runs one PerceiverLayer on hidden [batch, nq, q_dim] in place. For cross-attention, inputs is
  // [batch, nk, kv_dim]; for self-attention it is ignored.
  void RunLayer(const PerceiverLayerSpec& layer, BackendBuffer& hidden, int64_t batch, int64_t nq, const float* inputs,
                int64_t nk, const uint8_t* key_mask, std::vector<HostTensor>* attention_out);
  HostTensor ToHost(const float* data, std::vector<int64_t> shape);

  std::unique_ptr<Backend> backend_;
  ModelSpec spec_;
};

}  // namespace perceiver
