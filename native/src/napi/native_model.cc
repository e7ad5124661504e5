#include "napi/native_model.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <utility>

#include "core/engine_error.h"
#include "napi/addon_state.h"
#include "napi/device_tensor.h"
#include "napi/js_errors.h"
#include "napi/promise_worker.h"
#include "napi/spec_reader.h"

namespace perceiver {

namespace {

// Who owns the outputs a call leaves in backend memory: each becomes a NativeDeviceTensor that
// keeps the graph (and so its backend) alive.
struct OutputOwner {
  AddonState* state;
  std::shared_ptr<PerceiverGraph> graph;
};

// { name, shape, data } for an output on the host; { name, shape, device } for one left in
// backend memory.
Napi::Object TensorToJs(Napi::Env env, OutputTensor& t, const OutputOwner& owner) {
  Napi::Object out = Napi::Object::New(env);
  Napi::Array shape = Napi::Array::New(env, t.shape.size());
  for (size_t i = 0; i < t.shape.size(); ++i) shape.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(t.shape[i])));
  out.Set("name", t.name);
  out.Set("shape", shape);
  if (t.resident.buffer) out.Set("device", NativeDeviceTensor::Make(owner.state, owner.graph, std::move(t.resident)));
  else out.Set("data", FloatsToJs(env, std::move(t.data)));
  return out;
}

Napi::Array TensorListToJs(Napi::Env env, std::vector<OutputTensor>& list, const OutputOwner& owner) {
  Napi::Array out = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); ++i) out.Set(static_cast<uint32_t>(i), TensorToJs(env, list[i], owner));
  return out;
}

int64_t ReadDim(const Napi::Value& v, const std::string& what, int64_t min) {
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1.0;
  if (!v.IsNumber() || !(d >= static_cast<double>(min) && d <= static_cast<double>(int64_t{1} << 40) && d == static_cast<double>(static_cast<int64_t>(d)))) {
    ThrowInvalidArgument(what, "an integer in [" + std::to_string(min) + ", 2^40]", DescribeJs(v));
  }
  return static_cast<int64_t>(d);
}

// Integers from a BigInt64Array or Int32Array, with every value checked by `check`.
std::vector<int64_t> ReadIntegers(const Napi::Value& v, const std::string& what) {
  if (!v.IsTypedArray()) ThrowInvalidArgument(what, "a BigInt64Array or Int32Array", DescribeJs(v));
  Napi::TypedArray a = v.As<Napi::TypedArray>();
  std::vector<int64_t> out(a.ElementLength());
  if (a.TypedArrayType() == napi_bigint64_array) {
    std::memcpy(out.data(), v.As<Napi::TypedArrayOf<int64_t>>().Data(), out.size() * sizeof(int64_t));
  } else if (a.TypedArrayType() == napi_int32_array) {
    const int32_t* src = v.As<Napi::Int32Array>().Data();
    for (size_t i = 0; i < out.size(); ++i) out[i] = src[i];
  } else {
    ThrowInvalidArgument(what, "a BigInt64Array or Int32Array", DescribeJs(v));
  }
  return out;
}

// The model a request is read for: device-tensor inputs must live in its backend memory.
struct RequestContext {
  AddonState* state;
  const std::shared_ptr<PerceiverGraph>* graph;
};

// A {name, shape, device} input: a NativeDeviceTensor of this model, read in place by the
// preprocessor (its shape is the tensor's own).
InputArray ReadDeviceInput(const Napi::Value& device, const std::string& what, const RequestContext& ctx) {
  if (!device.IsObject() || !device.As<Napi::Object>().InstanceOf(ctx.state->device_tensor_class.Value())) {
    ThrowInvalidArgument(what, "a DeviceTensor", DescribeJs(device));
  }
  const std::shared_ptr<DeviceTensorStorage>& storage = NativeDeviceTensor::Unwrap(device.As<Napi::Object>())->storage();
  if (!storage) ThrowDisposed("the DeviceTensor passed as " + what);
  if (storage->graph() != *ctx.graph) {
    ThrowInvalidArgument(what, "a host Tensor, or a DeviceTensor from this model's upload() or outputs",
                         "a DeviceTensor of another model (" + storage->graph()->device_name() + ")");
  }
  InputArray in;
  in.resident = storage->tensor();
  in.shape = in.resident.shape;
  return in;
}

// Copies one {name, shape, data} input out of JavaScript memory.
InputArray ReadInput(const Napi::Object& js, const std::string& what, const RequestContext* ctx) {
  if (ctx != nullptr && js.Has("device")) return ReadDeviceInput(js.Get("device"), what, *ctx);
  InputArray in;
  in.argument = what;
  Napi::Value shape = js.Get("shape");
  if (!shape.IsArray()) ThrowInvalidArgument(what + ".shape", "an array", DescribeJs(shape));
  Napi::Array dims = shape.As<Napi::Array>();
  if (dims.Length() > 8) ThrowInvalidArgument(what + ".shape", "at most 8 dimensions", std::to_string(dims.Length()));
  int64_t count = 1;
  for (uint32_t i = 0; i < dims.Length(); ++i) {
    in.shape.push_back(ReadDim(dims.Get(i), what + ".shape[" + std::to_string(i) + "]", 0));
    count *= in.shape.back();
    if (count > (int64_t{1} << 34)) ThrowInvalidArgument(what + ".shape", "at most 2^34 elements", "more");
  }
  Napi::Value data = js.Get("data");
  if (!data.IsTypedArray()) ThrowInvalidArgument(what + ".data", "a typed array", DescribeJs(data));
  Napi::TypedArray array = data.As<Napi::TypedArray>();
  if (static_cast<int64_t>(array.ElementLength()) != count) {
    ThrowInvalidArgument(what + ".data", std::to_string(count) + " values (its shape)", std::to_string(array.ElementLength()));
  }
  if (array.TypedArrayType() == napi_float32_array) {
    // Copied here, on the main thread (a memcpy): the call then owns its inputs, whatever
    // JavaScript does with the array meanwhile. The NaN/Inf scan runs with the call, on the pool
    // (PerceiverGraph::Encode / Upload).
    const float* src = data.As<Napi::Float32Array>().Data();
    in.values.assign(src, src + count);
  } else {
    in.integer = true;
    const std::vector<int64_t> ids = ReadIntegers(data, what + ".data");
    in.ids.resize(ids.size());
    // Values beyond int32 become INT32_MIN, which every vocabulary check rejects (and names as such).
    for (size_t i = 0; i < ids.size(); ++i) in.ids[i] = (ids[i] < INT32_MIN + 1 || ids[i] > INT32_MAX) ? INT32_MIN : static_cast<int32_t>(ids[i]);
  }
  return in;
}

// outputs: 'host' (default) copies every output to host memory; 'device' leaves them in backend memory.
bool ReadOutputsOnBackend(const Napi::Object& js) {
  Napi::Value outputs = js.Get("outputs");
  if (outputs.IsUndefined() || outputs.IsNull()) return false;
  const std::string placement = outputs.IsString() ? outputs.As<Napi::String>().Utf8Value() : "";
  if (placement != "host" && placement != "device") ThrowInvalidArgument("outputs", "'host' or 'device'", DescribeJs(outputs));
  return placement == "device";
}

EncodeRequest ReadEncodeRequest(const Napi::Object& js, const RequestContext& ctx) {
  EncodeRequest r;
  r.batch = ReadDim(js.Get("batch"), "request.batch", 1);
  Napi::Value inputs = js.Get("inputs");
  if (!inputs.IsArray()) ThrowInvalidArgument("inputs", "an array of {name, shape, data}", DescribeJs(inputs));
  Napi::Array list = inputs.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); ++i) {
    Napi::Value item = list.Get(i);
    if (!item.IsObject()) ThrowInvalidArgument("inputs[" + std::to_string(i) + "]", "an object", DescribeJs(item));
    Napi::Object o = item.As<Napi::Object>();
    Napi::Value name = o.Get("name");
    const std::string key = name.IsString() ? name.As<Napi::String>().Utf8Value() : "";
    if (r.inputs.count(key)) ThrowInvalidArgument("inputs", "each name once", "\"" + key + "\" twice");
    r.inputs[key] = ReadInput(o, key.empty() ? "inputs" : "inputs." + key, &ctx);
  }
  Napi::Value mask = js.Get("attentionMask");
  if (!mask.IsUndefined() && !mask.IsNull()) {
    if (!mask.IsTypedArray() || mask.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      ThrowInvalidArgument("attentionMask", "a Uint8Array", DescribeJs(mask));
    }
    Napi::Uint8Array m = mask.As<Napi::Uint8Array>();
    r.key_mask.assign(m.Data(), m.Data() + m.ElementLength());
  }
  r.interpolate_pos_encoding = js.Get("interpolatePosEncoding").ToBoolean().Value();
  Napi::Value seed = js.Get("seed");
  if (seed.IsNumber()) r.seed = static_cast<uint64_t>(seed.As<Napi::Number>().Int64Value());
  r.output_hidden_states = js.Get("outputHiddenStates").ToBoolean().Value();
  r.output_attentions = js.Get("outputAttentions").ToBoolean().Value();
  r.outputs_on_backend = ReadOutputsOnBackend(js);
  return r;
}

DecodeRequest ReadDecodeRequest(const Napi::Object& js) {
  DecodeRequest r;
  Napi::Value points = js.Get("subsampledOutputPoints");
  if (!points.IsUndefined() && !points.IsNull()) {
    if (!points.IsArray()) ThrowInvalidArgument("subsampledOutputPoints", "an array of {name, indices}", DescribeJs(points));
    Napi::Array list = points.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); ++i) {
      Napi::Value item = list.Get(i);
      if (!item.IsObject()) ThrowInvalidArgument("subsampledOutputPoints[" + std::to_string(i) + "]", "an object", DescribeJs(item));
      Napi::Object o = item.As<Napi::Object>();
      Napi::Value name = o.Get("name");
      const std::string key = name.IsString() ? name.As<Napi::String>().Utf8Value() : "";
      r.points[key] = ReadIntegers(o.Get("indices"), key.empty() ? "subsampledOutputPoints" : "subsampledOutputPoints." + key);
    }
  }
  r.output_attentions = js.Get("outputAttentions").ToBoolean().Value();
  r.outputs_on_backend = ReadOutputsOnBackend(js);
  return r;
}

// One call of the engine on libuv's pool (see promise_worker.h). The worker holds the model object,
// so neither the model nor its weights can go away underneath it, and tells the model when the
// call is over (a disposed model releases its graph once no call is in flight).
template <typename Result>
PromiseWorker<Result>* NewCall(Napi::Env env, NativeModel* model, Napi::Object model_object, AddonState* state,
                               std::function<Result()> work, std::function<Napi::Value(Napi::Env, Result&)> settle) {
  return new PromiseWorker<Result>(env, "perceiver-io:call", model_object, state, std::move(work), std::move(settle),
                                   [model] { model->CallFinished(); });
}

void SetEncodeOutputs(Napi::Env env, Napi::Object out, EncodeResult& e, const EncodeRequest& r, const OutputOwner& owner) {
  out.Set("lastHiddenState", TensorToJs(env, e.last_hidden_state, owner));
  if (r.output_hidden_states) out.Set("hiddenStates", TensorListToJs(env, e.hidden_states, owner));
  if (r.output_attentions) out.Set("attentions", TensorListToJs(env, e.attentions, owner));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// NativeEncoding

Napi::Function NativeEncoding::Define(Napi::Env env) {
  return DefineClass(env, "NativeEncoding",
                     {InstanceMethod<&NativeEncoding::Dispose>("dispose"), InstanceAccessor<&NativeEncoding::Disposed>("disposed")});
}

NativeEncoding::NativeEncoding(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeEncoding>(info) {}

void NativeEncoding::Attach(std::shared_ptr<PerceiverGraph> graph, std::shared_ptr<Encoding> encoding) {
  graph_ = std::move(graph);
  encoding_ = std::move(encoding);
}

Napi::Value NativeEncoding::Dispose(const Napi::CallbackInfo& info) {
  encoding_.reset();
  graph_.reset();
  return info.Env().Undefined();
}

Napi::Value NativeEncoding::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), encoding_ == nullptr); }

// ---------------------------------------------------------------------------------------------
// NativeModel

Napi::Function NativeModel::Define(Napi::Env env) {
  return DefineClass(env, "NativeModel",
                     {
                         InstanceMethod<&NativeModel::Load>("load"),
                         InstanceMethod<&NativeModel::Forward>("forward"),
                         InstanceMethod<&NativeModel::Encode>("encode"),
                         InstanceMethod<&NativeModel::Decode>("decode"),
                         InstanceMethod<&NativeModel::Upload>("upload"),
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
      ThrowInvalidArgument("NativeModel(spec, weights, options)", "three objects", std::to_string(info.Length()) + " arguments, not all objects");
    }
    Napi::Object options = info[2].As<Napi::Object>();
    Napi::Value device = options.Get("device");
    const std::string device_name = device.IsString() ? device.As<Napi::String>().Utf8Value() : "";
    Napi::Value dtype = options.Get("dtype");
    const std::string dtype_name = dtype.IsString() ? dtype.As<Napi::String>().Utf8Value() : "float32";
    Precision precision;
    if (dtype_name == "float32") precision = Precision::kFloat32;
    else if (dtype_name == "tfloat32") precision = Precision::kTfloat32;
    else if (dtype_name == "float16") precision = Precision::kFloat16;
    else if (dtype_name == "bfloat16") precision = Precision::kBfloat16;
    else ThrowInvalidArgument("dtype", "float32, tfloat32, float16 or bfloat16", DescribeJs(dtype));
    if (device_name == "cpu") {
      if (precision != Precision::kFloat32 && precision != Precision::kBfloat16) {
        throw EngineError(ErrorCode::kBackendUnavailable, "dtype: the cpu backend computes in float32 or bfloat16");
      }
    } else if (device_name != "cuda") {
      throw EngineError(ErrorCode::kBackendUnavailable, "device \"" + device_name + "\" is unknown (expected cpu or cuda)");
    }
    Napi::Value index = options.Get("deviceIndex");
    pending_ = std::make_shared<PendingLoad>();
    pending_->cuda = device_name == "cuda";
    pending_->device_index = index.IsNumber() ? index.As<Napi::Number>().Int32Value() : 0;
    pending_->precision = precision;
    // Reads the spec and names the weights (main thread, no weight values read); load() copies,
    // packs and checks them on libuv's pool.
    pending_->parts = ReadModelSpec(info[0].As<Napi::Object>(), info[1].As<Napi::Object>(), pending_->weights);
    weights_while_loading_ = Napi::Persistent(info[1].As<Napi::Object>());
    state_ = GetAddonState(env);
    return env.Undefined();
  });
}

// load() -> Promise<void>: builds the backend and loads every weight off the main thread, one at
// a time (a file-range weight is read from the checkpoint file just before it is packed). The
// Float32Arrays stay referenced (alive) until it settles, then are never read again; the caller
// keeps the files open until then (lib/modeling/perceiver_model.ts).
Napi::Value NativeModel::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    if (disposed_) ThrowDisposed("the model");
    if (!pending_) ThrowInvalidArgument("load()", "one call", "a second call (the model is already loaded or loading)");
    std::shared_ptr<PendingLoad> pending = std::move(pending_);
    Napi::Object holder = Napi::Object::New(env);
    holder.Set("model", Value());
    holder.Set("weights", weights_while_loading_.Value());
    NativeModel* self = this;
    auto* worker = new PromiseWorker<std::shared_ptr<PerceiverGraph>>(
        env, "perceiver-io:load", holder, state_,
        [pending]() {
          std::unique_ptr<Backend> backend = pending->cuda ? CreateCudaBackend(pending->device_index, pending->precision)
                                                           : CreateCpuBackend(pending->precision);
          backend = WithProfilingIfRequested(WithCountingIfRequested(std::move(backend)));
          pending->weights.LoadAll(*backend);
          return std::make_shared<PerceiverGraph>(std::move(backend), std::move(pending->parts));
        },
        [self](Napi::Env env, std::shared_ptr<PerceiverGraph>& graph) -> Napi::Value {
          self->graph_ = std::move(graph);
          self->ReleaseIfIdle();
          return env.Undefined();
        },
        [self] {
          --self->in_flight_;
          if (!self->weights_while_loading_.IsEmpty()) self->weights_while_loading_.Reset();
        });
    ++in_flight_;
    return worker->Start();
  });
}

std::shared_ptr<PerceiverGraph> NativeModel::Usable() {
  if (disposed_) ThrowDisposed("the model");
  if (!graph_) ThrowInvalidArgument("the model", "its weights loaded (await load())", "a call before load() finished");
  return graph_;
}

// forward(request) -> Promise<{ logits, lastHiddenState, hiddenStates?, attentions?, crossAttentions? }>
Napi::Value NativeModel::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    std::shared_ptr<PerceiverGraph> graph = Usable();
    if (info.Length() < 1 || !info[0].IsObject()) ThrowInvalidArgument("forward(request)", "an object", info.Length() < 1 ? "no argument" : DescribeJs(info[0]));
    auto encode = std::make_shared<EncodeRequest>(ReadEncodeRequest(info[0].As<Napi::Object>(), RequestContext{state_, &graph}));
    auto decode = std::make_shared<DecodeRequest>(ReadDecodeRequest(info[0].As<Napi::Object>()));
    decode->output_attentions = encode->output_attentions;
    const OutputOwner owner{state_, graph};
    auto* worker = NewCall<ForwardResult>(
        env, this, Value(), state_,
        [graph, encode, decode]() { return graph->Forward(*encode, *decode); },
        [encode, owner](Napi::Env env, ForwardResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("logits", TensorListToJs(env, r.decoded.logits, owner));
          SetEncodeOutputs(env, out, r.encoded, *encode, owner);
          if (encode->output_attentions) {
            std::vector<OutputTensor> cross = std::move(r.encoded.cross_attentions);
            for (auto& t : r.decoded.cross_attentions) cross.push_back(std::move(t));
            out.Set("crossAttentions", TensorListToJs(env, cross, owner));
          }
          return out;
        });
    ++in_flight_;
    return worker->Start();
  });
}

// encode(request) -> Promise<{ encoding: NativeEncoding, lastHiddenState, hiddenStates?, attentions?, crossAttentions? }>
Napi::Value NativeModel::Encode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    std::shared_ptr<PerceiverGraph> graph = Usable();
    if (info.Length() < 1 || !info[0].IsObject()) ThrowInvalidArgument("encode(request)", "an object", info.Length() < 1 ? "no argument" : DescribeJs(info[0]));
    auto request = std::make_shared<EncodeRequest>(ReadEncodeRequest(info[0].As<Napi::Object>(), RequestContext{state_, &graph}));
    Napi::FunctionReference* encoding_class = &state_->encoding_class;
    const OutputOwner owner{state_, graph};
    auto* worker = NewCall<EncodeResult>(
        env, this, Value(), state_, [graph, request]() { return graph->Encode(*request); },
        [graph, request, encoding_class, owner](Napi::Env env, EncodeResult& r) -> Napi::Value {
          Napi::Object handle = encoding_class->New({});
          NativeEncoding::Unwrap(handle)->Attach(graph, r.encoding);
          Napi::Object out = Napi::Object::New(env);
          out.Set("encoding", handle);
          SetEncodeOutputs(env, out, r, *request, owner);
          if (request->output_attentions) out.Set("crossAttentions", TensorListToJs(env, r.cross_attentions, owner));
          return out;
        });
    ++in_flight_;
    return worker->Start();
  });
}

// decode(encoding, request) -> Promise<{ logits, crossAttentions? }>
Napi::Value NativeModel::Decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    std::shared_ptr<PerceiverGraph> graph = Usable();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsObject()) ThrowInvalidArgument("decode(encoding, request)", "two objects", std::to_string(info.Length()) + " arguments, not all objects");
    Napi::Object handle = info[0].As<Napi::Object>();
    if (!handle.InstanceOf(state_->encoding_class.Value())) ThrowInvalidArgument("encoding", "the result of this model's encode()", DescribeJs(handle));
    NativeEncoding* native = NativeEncoding::Unwrap(handle);
    if (!native->encoding()) ThrowDisposed("the encoding");
    if (native->graph() != graph) ThrowInvalidArgument("encoding", "the result of this model's encode()", "an encoding made by another model");
    if (!graph->has_decoder()) ThrowInvalidArgument("decode", "a model with a decoder", "a model without one");
    auto request = std::make_shared<DecodeRequest>(ReadDecodeRequest(info[1].As<Napi::Object>()));
    std::shared_ptr<Encoding> encoding = native->encoding();
    const OutputOwner owner{state_, graph};
    auto* worker = NewCall<DecodeResult>(
        env, this, Value(), state_, [graph, encoding, request]() { return graph->Decode(*encoding, *request); },
        [request, owner](Napi::Env env, DecodeResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("logits", TensorListToJs(env, r.logits, owner));
          if (request->output_attentions) out.Set("crossAttentions", TensorListToJs(env, r.cross_attentions, owner));
          return out;
        });
    ++in_flight_;
    return worker->Start();
  });
}

// upload({ shape, data: Float32Array }) -> Promise<NativeDeviceTensor>: the host values copied into
// this model's backend memory. The values are copied out of JavaScript memory here (and checked
// finite, as every input is), the transfer runs on libuv's pool.
Napi::Value NativeModel::Upload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    std::shared_ptr<PerceiverGraph> graph = Usable();
    if (info.Length() < 1 || !info[0].IsObject()) ThrowInvalidArgument("upload(tensor)", "an object", info.Length() < 1 ? "no argument" : DescribeJs(info[0]));
    auto input = std::make_shared<InputArray>(ReadInput(info[0].As<Napi::Object>(), "tensor", nullptr));
    if (input->integer) ThrowInvalidArgument("tensor", "float32 values (token ids stay on the host)", "integers");
    AddonState* state = state_;
    auto* worker = NewCall<BackendTensor>(
        env, this, Value(), state_, [graph, input]() {
          input->CheckFinite();
          return graph->Upload(input->values, input->shape);
        },
        [graph, state](Napi::Env, BackendTensor& t) -> Napi::Value { return NativeDeviceTensor::Make(state, graph, std::move(t)); });
    ++in_flight_;
    return worker->Start();
  });
}

void NativeModel::CallFinished() {
  --in_flight_;
  ReleaseIfIdle();
}

void NativeModel::ReleaseIfIdle() {
  if (!disposed_ || in_flight_ > 0) return;
  graph_.reset();
  pending_.reset();
}

// Idempotent. Calls already running finish normally; the weights are released after them (and
// after the last live encoding, which holds its own reference).
Napi::Value NativeModel::Dispose(const Napi::CallbackInfo& info) {
  disposed_ = true;
  ReleaseIfIdle();
  return info.Env().Undefined();
}

Napi::Value NativeModel::InFlight(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), in_flight_); }

Napi::Value NativeModel::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }

}  // namespace perceiver
