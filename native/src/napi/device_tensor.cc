#include "napi/device_tensor.h"

#include <atomic>
#include <cstring>
#include <utility>

#include "core/engine_error.h"
#include "napi/addon_state.h"
#include "napi/js_errors.h"

namespace perceiver {

namespace {

// Process-wide (every environment's tensors together): what deviceTensorStats() reports.
std::atomic<int64_t> live_tensors{0};
std::atomic<int64_t> live_bytes{0};

// toHost(): the backend-to-host copy on libuv's pool. The worker holds the handle object and its
// own share of the storage, so neither the buffer nor its backend can go away during the copy.
class ReadWorker final : public Napi::AsyncWorker {
 public:
  ReadWorker(Napi::Env env, Napi::Object handle, std::shared_ptr<DeviceTensorStorage> storage, AddonState* state)
      : Napi::AsyncWorker(env, "perceiver-io:toHost"),
        deferred_(Napi::Promise::Deferred::New(env)),
        storage_(std::move(storage)),
        state_(state) {
    handle_ = Napi::Persistent(handle);
  }

  Napi::Promise Start() {
    state_->Begin();
    Queue();
    return deferred_.Promise();
  }

 protected:
  void Execute() override {
    try {
      values_.resize(static_cast<size_t>(storage_->tensor().size()));
      storage_->graph()->Download(storage_->tensor(), values_.data());
    } catch (...) {
      failed_ = true;
      ClassifyException(std::current_exception(), &code_, &message_);
    }
    state_->End();
  }

  void OnOK() override {
    storage_.reset();  // a tensor disposed during the copy is freed now
    if (failed_) {
      deferred_.Reject(MakeJsError(Env(), code_, message_).Value());
      return;
    }
    try {
      deferred_.Resolve(FloatsToJs(Env(), std::move(values_)));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& error) override {
    storage_.reset();
    deferred_.Reject(error.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference handle_;
  std::shared_ptr<DeviceTensorStorage> storage_;
  AddonState* state_;
  HostFloats values_;
  bool failed_ = false;
  ErrorCode code_ = ErrorCode::kInternal;
  std::string message_;
};

}  // namespace

// The output's bytes move into the JavaScript array without a copy (an external ArrayBuffer that
// owns the vector): outputs can be hundreds of MB (the language model's logits at batch 64 are
// 137 MB), and a copy on the main thread would block the event loop for tens of milliseconds.
// Where external buffers are refused (a runtime with the V8 sandbox), the bytes are copied.
Napi::Float32Array FloatsToJs(Napi::Env env, HostFloats&& values) {
  if (!values.empty()) {
    auto* owned = new HostFloats(std::move(values));
    try {
      Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(
          env, owned->data(), owned->size() * sizeof(float), [](Napi::Env, void*, HostFloats* v) { delete v; }, owned);
      return Napi::Float32Array::New(env, owned->size(), buffer, 0);
    } catch (const Napi::Error&) {
      values = std::move(*owned);
      delete owned;
    }
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
    if (!storage_) throw EngineError(ErrorCode::kDisposed, "the DeviceTensor has been disposed");
    auto* worker = new ReadWorker(env, Value(), storage_, state_);
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
