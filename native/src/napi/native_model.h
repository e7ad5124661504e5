// NativeModel: the JavaScript handle of one loaded model (a PerceiverGraph on one backend), and
// NativeEncoding: the latents of one encode() call, kept in backend memory for decode().
// (NativeDeviceTensor, a tensor in backend memory, is in device_tensor.h.)
//
// Every call validates and copies its request on the main thread, runs on libuv's thread pool
// (one native call per forward, never blocking the event loop) and settles a promise. The
// backend copies (CPU: packs) every weight into memory the engine owns while the model is built,
// so no JavaScript ArrayBuffer is referenced afterwards: JavaScript may free, detach or resize
// what it passed, and the model holds no second copy of the weights alive.
#pragma once

#include <napi.h>

#include <memory>

#include "model/deferred_weight.h"
#include "model/perceiver_graph.h"

namespace perceiver {

struct AddonState;

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NativeModel(const Napi::CallbackInfo& info);

  // Called on the main thread when a call settles.
  void CallFinished();

 private:
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Encode(const Napi::CallbackInfo& info);
  Napi::Value Decode(const Napi::CallbackInfo& info);
  Napi::Value Upload(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value InFlight(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  std::shared_ptr<PerceiverGraph> Usable();
  void ReleaseIfIdle();

  // What load() builds the graph from: the spec read on the main thread, the weights it names.
  struct PendingLoad {
    bool cuda = false;
    int device_index = 0;
    Precision precision = Precision::kFloat32;
    ModelParts parts;
    WeightLoadList weights;
  };
  std::shared_ptr<PendingLoad> pending_;
  Napi::ObjectReference weights_while_loading_;  // the Float32Arrays load() reads
  std::shared_ptr<PerceiverGraph> graph_;
  AddonState* state_ = nullptr;
  int in_flight_ = 0;
  bool disposed_ = false;
};

class NativeEncoding : public Napi::ObjectWrap<NativeEncoding> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NativeEncoding(const Napi::CallbackInfo& info);

  // Set right after construction, on the main thread.
  void Attach(std::shared_ptr<PerceiverGraph> graph, std::shared_ptr<Encoding> encoding);
  const std::shared_ptr<PerceiverGraph>& graph() const { return graph_; }
  const std::shared_ptr<Encoding>& encoding() const { return encoding_; }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);

  std::shared_ptr<PerceiverGraph> graph_;
  std::shared_ptr<Encoding> encoding_;
};

}  // namespace perceiver
