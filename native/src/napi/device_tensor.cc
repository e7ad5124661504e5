#include "napi/device_tensor.h"

#include <atomic>
#include <cstring>
#include <string>
#include <utility>

#include "core/engine_error.h"
#include "napi/addon_state.h"
#include "napi/js_errors.h"
#include "napi/promise_worker.h"

namespace perceiver {

namespace {

// Process-wide (every environment's tensors together): what deviceTensorStats() reports.
std::atomic<int64_t> live_tensors{0};
std::atomic<int64_t> live_bytes{0};

}  // namespace

// The output's bytes move into the JavaScript array without a copy (an external ArrayBuffer that
// owns the vector): outputs can be hundreds of MB (the language model's logits at batch 64 are
// 137 MB), and a copy on the main thread would block the event loop for tens of milliseconds.
// Where external buffers are refused (a runtime with the V8 sandbox), the bytes are copied.
//
// Raw Node-API here, for the ownership of the bytes: once the external buffer exists it owns them
// (its finalizer frees them), so a later failure (making the Float32Array) must not free them
// again; a refusal before it was made (the sandbox, or an environment being torn down) leaves them
// ours. Any other failure leaves unknown whether Node registered the finalizer, so the bytes are
// left to it rather than risk a double free.
Napi::Float32Array FloatsToJs(Napi::Env env, HostFloats&& values) {
  if (!values.empty()) {
    auto* owned = new HostFloats(std::move(values));
    napi_value buffer = nullptr;
    const napi_status status = napi_create_external_arraybuffer(
        env, owned->data(), owned->size() * sizeof(float), [](napi_env, void*, void* hint) { delete static_cast<HostFloats*>(hint); },
        owned, &buffer);
    if (status == napi_ok) return Napi::Float32Array::New(env, owned->size(), Napi::ArrayBuffer(env, buffer), 0);
    if (status != napi_no_external_buffers_allowed) {
      bool pending = false;
      const bool cannot_run_js = status == napi_pending_exception && napi_is_exception_pending(env, &pending) == napi_ok && !pending;
      if (cannot_run_js) delete owned;
      throw Napi::Error::New(env, "cannot make an output array (Node-API status " + std::to_string(status) + ")");
    }
    values = std::move(*owned);
    delete owned;
  }
  Napi::Float32Array data = Napi::Float32Array::New(env, values.size());
  if (!values.empty()) std::memcpy(data.Data(), values.data(), values.size() * sizeof(float));
  return data;
}

DeviceTensorStorage::DeviceTensorStorage(std::shared_ptr<PerceiverGraph> graph, BackendTensor tensor)
    : graph_(std::move(graph)), tensor_(std::move(tensor)) {
  live_tensors.fetch_add(1);
  live_bytes.fetch_add(bytes());
}

DeviceTensorStorage::~DeviceTensorStorage() {
  live_tensors.fetch_sub(1);
  live_bytes.fetch_sub(bytes());
}

Napi::Function NativeDeviceTensor::Define(Napi::Env env) {
  return DefineClass(env, "NativeDeviceTensor",
                     {
                         InstanceMethod<&NativeDeviceTensor::ToHost>("toHost"),
                         InstanceMethod<&NativeDeviceTensor::Dispose>("dispose"),
                         InstanceAccessor<&NativeDeviceTensor::Disposed>("disposed"),
                         InstanceAccessor<&NativeDeviceTensor::Shape>("shape"),
                         InstanceAccessor<&NativeDeviceTensor::Device>("device"),
                     });
}

// Constructed from JavaScript it owns nothing (it reads as disposed); Make() fills it.
NativeDeviceTensor::NativeDeviceTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeDeviceTensor>(info) {}

Napi::Object NativeDeviceTensor::Make(AddonState* state, std::shared_ptr<PerceiverGraph> graph, BackendTensor tensor) {
  Napi::Object handle = state->device_tensor_class.New({});
  NativeDeviceTensor* self = Unwrap(handle);
  self->state_ = state;
  self->shape_ = tensor.shape;
  self->device_ = graph->device_name();
  self->storage_ = std::make_shared<DeviceTensorStorage>(std::move(graph), std::move(tensor));
  return handle;
}

// toHost() -> Promise<Float32Array>
Napi::Value NativeDeviceTensor::ToHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    if (!storage_) ThrowDisposed("the DeviceTensor");
    // The copy runs on libuv's pool. The work holds its own share of the storage, so neither the
    // buffer nor its backend can go away during the copy (a dispose() meanwhile frees it after).
    std::shared_ptr<DeviceTensorStorage> storage = storage_;
    auto* worker = new PromiseWorker<HostFloats>(
        env, "perceiver-io:toHost", Value(), state_,
        [storage]() {
          HostFloats values(static_cast<size_t>(storage->tensor().size()));
          storage->graph()->Download(storage->tensor(), values.data());
          return values;
        },
        [](Napi::Env env, HostFloats& values) -> Napi::Value { return FloatsToJs(env, std::move(values)); });
    return worker->Start();
  });
}

// Idempotent; the memory is freed at once unless a toHost() still copies from it.
Napi::Value NativeDeviceTensor::Dispose(const Napi::CallbackInfo& info) {
  storage_.reset();
  return info.Env().Undefined();
}

Napi::Value NativeDeviceTensor::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), storage_ == nullptr); }

Napi::Value NativeDeviceTensor::Shape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array shape = Napi::Array::New(env, shape_.size());
  for (size_t i = 0; i < shape_.size(); ++i) shape.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(shape_[i])));
  return shape;
}

Napi::Value NativeDeviceTensor::Device(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), device_); }

Napi::Value DeviceTensorStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("live", Napi::Number::New(env, static_cast<double>(live_tensors.load())));
  out.Set("bytes", Napi::Number::New(env, static_cast<double>(live_bytes.load())));
  return out;
}

}  // namespace perceiver
