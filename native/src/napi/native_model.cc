#include "napi/native_model.h"

#include <cstring>
#include <string>
#include <utility>

#include "core/engine_error.h"
#include "napi/addon_state.h"
#include "napi/js_errors.h"
#include "napi/spec_reader.h"

namespace perceiver {

namespace {

Napi::Object TensorToJs(Napi::Env env, const HostTensor& t) {
  Napi::Object out = Napi::Object::New(env);
  Napi::Array shape = Napi::Array::New(env, t.shape.size());
  for (size_t i = 0; i < t.shape.size(); ++i) shape.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(t.shape[i])));
  Napi::Float32Array data = Napi::Float32Array::New(env, t.data.size());
  if (!t.data.empty()) std::memcpy(data.Data(), t.data.data(), t.data.size() * sizeof(float));
  out.Set("shape", shape);
  out.Set("data", data);
  return out;
}

Napi::Array TensorListToJs(Napi::Env env, const std::vector<HostTensor>& list) {
  Napi::Array out = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); ++i) out.Set(static_cast<uint32_t>(i), TensorToJs(env, list[i]));
  return out;
}

// Copies the request out of JavaScript memory, so the caller may reuse its arrays at once.
ForwardRequest ReadRequest(const Napi::Object& js) {
  ForwardRequest r;
  auto dim = [&](const char* key) {
    Napi::Value v = js.Get(key);
    if (!v.IsNumber()) ThrowInvalidArgument(std::string("request.") + key + ": expected an integer");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 1 && d <= (1 << 24) && d == static_cast<double>(static_cast<int64_t>(d)))) {
      ThrowInvalidArgument(std::string("request.") + key + ": expected a positive integer");
    }
    return static_cast<int64_t>(d);
  };
  r.batch = dim("batch");
  r.seq = dim("seq");
  const size_t count = static_cast<size_t>(r.batch * r.seq);

  Napi::Value ids = js.Get("inputIds");
  if (!ids.IsTypedArray()) ThrowInvalidArgument("inputs: expected a BigInt64Array or Int32Array of token ids");
  Napi::TypedArray ids_array = ids.As<Napi::TypedArray>();
  if (ids_array.ElementLength() != count) {
    ThrowInvalidArgument("inputs: expected " + std::to_string(count) + " token ids, got " +
                         std::to_string(ids_array.ElementLength()));
  }
  r.token_ids.resize(count);
  if (ids_array.TypedArrayType() == napi_bigint64_array) {
    const int64_t* src = ids.As<Napi::TypedArrayOf<int64_t>>().Data();
    for (size_t i = 0; i < count; ++i) {
      // Out-of-range values are clamped to -1, which the graph's vocabulary check then rejects.
      r.token_ids[i] = (src[i] < 0 || src[i] > INT32_MAX) ? -1 : static_cast<int32_t>(src[i]);
    }
  } else if (ids_array.TypedArrayType() == napi_int32_array) {
    std::memcpy(r.token_ids.data(), ids.As<Napi::Int32Array>().Data(), count * sizeof(int32_t));
  } else {
    ThrowInvalidArgument("inputs: expected a BigInt64Array or Int32Array of token ids");
  }

  Napi::Value mask = js.Get("attentionMask");
  if (!mask.IsUndefined() && !mask.IsNull()) {
    if (!mask.IsTypedArray() || mask.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      ThrowInvalidArgument("attentionMask: expected a Uint8Array");
    }
    Napi::Uint8Array m = mask.As<Napi::Uint8Array>();
    if (m.ElementLength() != count) ThrowInvalidArgument("attentionMask: expected " + std::to_string(count) + " values");
    r.key_mask.assign(m.Data(), m.Data() + count);
  }
  r.output_hidden_states = js.Get("outputHiddenStates").ToBoolean().Value();
  r.output_attentions = js.Get("outputAttentions").ToBoolean().Value();
  return r;
}

class ForwardWorker final : public Napi::AsyncWorker {
 public:
  ForwardWorker(Napi::Env env, NativeModel* model, Napi::Object model_object, std::shared_ptr<PerceiverGraph> graph,
                ForwardRequest request, AddonState* state)
      : Napi::AsyncWorker(env, "perceiver-io:forward"),
        deferred_(Napi::Promise::Deferred::New(env)),
        model_(model),
        graph_(std::move(graph)),
        request_(std::move(request)),
        state_(state) {
    model_ref_ = Napi::Persistent(model_object);  // the model outlives its forwards
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Start() {
    state_->Begin();
    Queue();
  }

 protected:
  void Execute() override {
    try {
      result_ = graph_->Forward(request_);
    } catch (...) {
      failed_ = true;
      ClassifyException(std::current_exception(), &code_, &message_);
    }
    state_->End();
  }

  void OnOK() override {
    Napi::Env env = Env();
    model_->ForwardFinished();
    if (failed_) {
      deferred_.Reject(MakeJsError(env, code_, message_).Value());
      return;
    }
    Napi::Object out = Napi::Object::New(env);
    if (result_.has_logits) out.Set("logits", TensorToJs(env, result_.logits));
    out.Set("lastHiddenState", TensorToJs(env, result_.last_hidden_state));
    if (request_.output_hidden_states) out.Set("hiddenStates", TensorListToJs(env, result_.hidden_states));
    if (request_.output_attentions) {
      out.Set("attentions", TensorListToJs(env, result_.attentions));
      out.Set("crossAttentions", TensorListToJs(env, result_.cross_attentions));
    }
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& error) override {
    model_->ForwardFinished();
    deferred_.Reject(error.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  NativeModel* model_;
  Napi::ObjectReference model_ref_;
  std::shared_ptr<PerceiverGraph> graph_;
  ForwardRequest request_;
  ForwardResult result_;
  AddonState* state_;
  bool failed_ = false;
  ErrorCode code_ = ErrorCode::kInternal;
  std::string message_;
};

}  // namespace

Napi::Function NativeModel::Define(Napi::Env env) {
  return DefineClass(env, "NativeModel",
                     {
                         InstanceMethod<&NativeModel::Forward>("forward"),
                         InstanceMethod<&NativeModel::Dispose>("dispose"),
                         InstanceAccessor<&NativeModel::InFlight>("inFlight"),
                         InstanceAccessor<&NativeModel::Disposed>("disposed"),
                     });
}

// new NativeModel(spec, weights, { device: 'cpu' })
NativeModel::NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {
  Napi::Env env = info.Env();
  GuardJs(env, [&]() -> Napi::Value {
    if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsObject() || !info[2].IsObject()) {
      ThrowInvalidArgument("NativeModel(spec, weights, options): expected three objects");
    }
    Napi::Object options = info[2].As<Napi::Object>();
    Napi::Value device = options.Get("device");
    const std::string device_name = device.IsString() ? device.As<Napi::String>().Utf8Value() : "";
    std::unique_ptr<Backend> backend;
    if (device_name == "cpu") {
      backend = WithProfilingIfRequested(CreateCpuBackend());
    } else {
      throw EngineError(ErrorCode::kBackendUnavailable,
                        "device \"" + device_name + "\" is not available in this build (compiled backends: cpu)");
    }
    ModelSpec spec = ReadModelSpec(info[0].As<Napi::Object>(), info[1].As<Napi::Object>(), *backend);
    graph_ = std::make_shared<PerceiverGraph>(std::move(backend), std::move(spec));
    weights_ = Napi::Persistent(info[1].As<Napi::Object>());
    spec_ = Napi::Persistent(info[0].As<Napi::Object>());
    state_ = GetAddonState(env);
    return env.Undefined();
  });
}

Napi::Value NativeModel::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    if (disposed_ || !graph_) throw EngineError(ErrorCode::kDisposed, "the model has been disposed");
    if (info.Length() < 1 || !info[0].IsObject()) ThrowInvalidArgument("forward(request): expected an object");
    ForwardRequest request = ReadRequest(info[0].As<Napi::Object>());
    auto* worker = new ForwardWorker(env, this, Value(), graph_, std::move(request), state_);
    Napi::Promise promise = worker->Promise();
    ++in_flight_;
    worker->Start();
    return promise;
  });
}

void NativeModel::ForwardFinished() {
  --in_flight_;
  ReleaseIfIdle();
}

void NativeModel::ReleaseIfIdle() {
  if (!disposed_ || in_flight_ > 0) return;
  graph_.reset();
  if (!weights_.IsEmpty()) weights_.Reset();
  if (!spec_.IsEmpty()) spec_.Reset();
}

// Idempotent. Forwards already running finish normally; the weights are released after them.
Napi::Value NativeModel::Dispose(const Napi::CallbackInfo& info) {
  disposed_ = true;
  ReleaseIfIdle();
  return info.Env().Undefined();
}

Napi::Value NativeModel::InFlight(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), in_flight_); }

Napi::Value NativeModel::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }

}  // namespace perceiver
