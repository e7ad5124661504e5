// NativeModel: the JavaScript handle of one loaded model (a PerceiverGraph on one backend), and
// NativeEncoding: the latents of one encode() call, kept in backend memory for decode().
// (NativeDeviceTensor, a tensor in backend memory, is in device_tensor.h.)
//
// Every call validates and copies its request on the main thread, runs on libuv's thread pool
// (one native call per forward, never blocking the event loop) and settles a promise. The
// model's weights stay in the JavaScript ArrayBuffers they were read into (no copy on the CPU); a
// reference keeps them alive until dispose() and the last running call have both finished.
#pragma once

#include <napi.h>

#include <memory>

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
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Encode(const Napi::CallbackInfo& info);
  Napi::Value Decode(const Napi::CallbackInfo& info);
  Napi::Value Upload(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value InFlight(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  std::shared_ptr<PerceiverGraph> Usable();
  void ReleaseIfIdle();

  std::shared_ptr<PerceiverGraph> graph_;
  Napi::ObjectReference weights_;  // keeps the weight ArrayBuffers alive
  Napi::ObjectReference spec_;
  AddonState* state_ = nullptr;
  int in_flight_ = 0;
  bool disposed_ = false;
};

class NativeEncoding : public Napi::ObjectWrap<NativeEncoding> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NativeEncoding(const Napi::CallbackInfo& info);

  // Set right after construction, on the main thread.
  void Attach(std::shared_ptr<PerceiverGraph> graph, std::shared_ptr<Encoding> encoding, Napi::Object weights);
  const std::shared_ptr<PerceiverGraph>& graph() const { return graph_; }
  const std::shared_ptr<Encoding>& encoding() const { return encoding_; }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);

  std::shared_ptr<PerceiverGraph> graph_;
  std::shared_ptr<Encoding> encoding_;
  Napi::ObjectReference weights_;  // the graph reads them while the encoding can still be decoded
};

}  // namespace perceiver
