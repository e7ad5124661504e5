// NativeDeviceTensor: the JavaScript handle of one float32 tensor in a model's backend memory
// (device memory on CUDA, host memory on the CPU backend); lib/device_tensor.ts wraps it.
//
// The memory is held through a shared DeviceTensorStorage that also holds the graph whose backend
// made it, so the backend outlives the buffer (a CUDA buffer goes back to its backend's pool)
// whatever is disposed first. dispose() drops the handle's share at once; the ObjectWrap's
// destructor (run when the handle is garbage collected) drops it too, as a safety net. A
// toHost() in flight holds its own share, so disposing during the copy is safe.
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "model/perceiver_graph.h"

namespace perceiver {

struct AddonState;

class DeviceTensorStorage {
 public:
  DeviceTensorStorage(std::shared_ptr<PerceiverGraph> graph, BackendTensor tensor);
  ~DeviceTensorStorage();
  DeviceTensorStorage(const DeviceTensorStorage&) = delete;
  DeviceTensorStorage& operator=(const DeviceTensorStorage&) = delete;

  const std::shared_ptr<PerceiverGraph>& graph() const { return graph_; }
  const BackendTensor& tensor() const { return tensor_; }
  int64_t bytes() const { return tensor_.size() * static_cast<int64_t>(sizeof(float)); }

 private:
  // Declared first, destroyed last: the buffer is released through the backend the graph owns.
  std::shared_ptr<PerceiverGraph> graph_;
  BackendTensor tensor_;
};

class NativeDeviceTensor : public Napi::ObjectWrap<NativeDeviceTensor> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NativeDeviceTensor(const Napi::CallbackInfo& info);

  // A new handle owning `tensor` of `graph`'s backend (main thread).
  static Napi::Object Make(AddonState* state, std::shared_ptr<PerceiverGraph> graph, BackendTensor tensor);
  // Null once disposed.
  const std::shared_ptr<DeviceTensorStorage>& storage() const { return storage_; }

 private:
  Napi::Value ToHost(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);

  std::shared_ptr<DeviceTensorStorage> storage_;
  AddonState* state_ = nullptr;
  // Kept after dispose, so a disposed tensor still describes itself.
  std::vector<int64_t> shape_;
  std::string device_;
};

// deviceTensorStats() -> { live, bytes }: the device-tensor buffers alive in this process (held by
// undisposed handles or by copies in flight), for leak checks.
Napi::Value DeviceTensorStats(const Napi::CallbackInfo& info);

// Moves output floats into a JavaScript Float32Array (without a copy where the runtime allows).
Napi::Float32Array FloatsToJs(Napi::Env env, HostFloats&& values);

}  // namespace perceiver
