// The Perceiver IO forward pass, written once against the Backend interface:
// preprocessor -> encoder (latent cross-attention, then blocks of latent self-attention)
// -> decoder (cross-attention from output queries to the latents) -> postprocessor.
// Encode and decode are separate steps, so one encoding can serve many decoded chunks.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "backend/arena_backend.h"
#include "backend/backend.h"
#include "model/decoders.h"
#include "model/postprocessors.h"
#include "model/preprocessors.h"
#include "model/request.h"

namespace perceiver {

struct EncoderSpec {
  WeightRef latents;  // kValues [num_latents, d_latents]
  int64_t num_latents = 0, d_latents = 0, num_blocks = 1;
  PerceiverLayerSpec cross_attention;
  std::vector<PerceiverLayerSpec> self_attends;  // shared by every block
};

struct ModelParts {
  float layer_norm_eps = 1e-5f;  // transformers never passes config.layer_norm_eps on
  std::unique_ptr<Preprocessor> preprocessor;
  bool multimodal_inputs = false;  // inputs are named by modality
  EncoderSpec encoder;
  std::unique_ptr<Decoder> decoder;  // optional
  bool decoder_queries_inputs = false;  // the decoder reads the preprocessed inputs (optical flow)
  std::unique_ptr<Postprocessor> postprocessor;  // single-modality postprocessor, optional
  std::unique_ptr<MultimodalPostprocessor> multimodal_postprocessor;  // one per modality, optional
};

// Leaves new elements uninitialised: every output vector is filled whole by its copy, and
// zero-filling first writes each byte twice (221 MB per language batch-64 call).
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <typename U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

// Output values on the host.
using HostFloats = std::vector<float, DefaultInitAllocator<float>>;

// One output: copied to the host (data), or left in backend memory (resident) when the request
// asks for outputs on the backend, for a DeviceTensor.
struct OutputTensor {
  std::string name;
  std::vector<int64_t> shape;
  HostFloats data;
  BackendTensor resident;  // buffer set when the output stays in backend memory
};

// What decode needs from encode, kept in backend memory.
struct Encoding {
  int64_t batch = 0;
  BackendTensor latents;  // [batch, num_latents, d_latents]
  EncoderInputs inputs;   // kept only when the decoder queries with them
};

struct EncodeResult {
  std::shared_ptr<Encoding> encoding;
  OutputTensor last_hidden_state;
  std::vector<OutputTensor> hidden_states;     // as transformers' hidden_states
  std::vector<OutputTensor> attentions;        // latent self-attention weights, in order of application
  std::vector<OutputTensor> cross_attentions;  // the encoder's cross-attention
};

struct DecodeResult {
  std::vector<OutputTensor> logits;            // one unnamed tensor, or one per modality
  std::vector<OutputTensor> cross_attentions;  // the decoder's cross-attention
};

struct ForwardResult {
  EncodeResult encoded;  // encoding released: a forward keeps nothing in backend memory
  DecodeResult decoded;  // empty without a decoder
};

class PerceiverGraph {
 public:
  PerceiverGraph(std::unique_ptr<Backend> backend, ModelParts parts);
  const ModelParts& parts() const { return parts_; }
  bool has_decoder() const { return parts_.decoder != nullptr; }

  EncodeResult Encode(const EncodeRequest& request);
  DecodeResult Decode(const Encoding& encoding, const DecodeRequest& request);
  // Encode and decode as one call: one lock, one arena scope, one wait for the device at the end.
  ForwardResult Forward(const EncodeRequest& encode, const DecodeRequest& decode);

  // A DeviceTensor's transfers, in turn with the model's calls where the backend serialises them.
  BackendTensor Upload(const std::vector<float>& host, std::vector<int64_t> shape);
  void Download(const BackendTensor& t, float* host);
  // Where the backend's memory lives: "cpu" or "cuda:N".
  std::string device_name() const { return backend_->name(); }
  // The arena's plans and calls (arena_backend.h).
  ArenaBackend::Stats arena_stats() const { return arena_->stats(); }

 private:
  EncodeResult EncodeQueued(const EncodeRequest& request);  // queues the work; the caller waits
  DecodeResult DecodeQueued(const Encoding& encoding, const DecodeRequest& request);
  // Runs `call` unless the model is unusable; a DeviceFault escaping it makes the model unusable.
  template <typename F>
  auto Guarded(F&& call) -> decltype(call());
  // One call of the model: the lock, the arena's scope (`key`, see AppendKey), the backend told
  // (BeginCall), `queue` (which queues the work and the output copies) and the one wait at the end.
  template <typename F>
  auto OneCall(const std::string& key, bool replayable, F&& queue) -> decltype(queue());

  // The output `t` with `shape`: copied to the host, or kept in backend memory when on_backend.
  OutputTensor Output(const BackendTensor& t, bool on_backend, std::string name = "", const std::vector<int64_t>* shape = nullptr);
  std::vector<OutputTensor> Outputs(const std::vector<BackendTensor>& list, bool on_backend);

  // Held for a whole call when the backend runs one call at a time (a GPU model's single stream).
  std::unique_lock<std::mutex> Exclusive();

  std::unique_ptr<Backend> backend_;  // the arena, in front of the backend given
  ArenaBackend* arena_;
  ModelParts parts_;
  TensorCache cache_;
  std::mutex call_mutex_;
  std::mutex fault_mutex_;
  std::string fault_;  // set once a DeviceFault escaped a call: the model is unusable
};

}  // namespace perceiver
