// NativeModel: the JavaScript handle of one loaded model (a PerceiverGraph on one backend).
//
// forward() validates and copies the request on the main thread, then runs the whole forward on
// libuv's thread pool (ForwardWorker) and settles a promise: one native call per forward, never
// blocking the event loop. The model's weights stay in the JavaScript ArrayBuffers they were read
// into (no copy on the CPU); a reference keeps them alive until dispose() and the last in-flight
// forward have both finished.
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

  // Called on the main thread when a ForwardWorker settles.
  void ForwardFinished();

 private:
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value InFlight(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  void ReleaseIfIdle();

  std::shared_ptr<PerceiverGraph> graph_;
  Napi::ObjectReference weights_;  // keeps the weight ArrayBuffers alive
  Napi::ObjectReference spec_;
  AddonState* state_ = nullptr;
  int in_flight_ = 0;
  bool disposed_ = false;
};

}  // namespace perceiver
