#include "napi/js_errors.h"

#include <new>
#include <sstream>

namespace perceiver {

std::string DescribeJs(const Napi::Value& value) {
  switch (value.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return value.As<Napi::Boolean>().Value() ? "boolean true" : "boolean false";
    case napi_number: {
      std::ostringstream out;
      out << "number " << value.As<Napi::Number>().DoubleValue();
      return out.str();
    }
    case napi_string: {
      const std::string s = value.As<Napi::String>().Utf8Value();
      return s.size() > 40 ? "string of length " + std::to_string(s.size()) : "string \"" + s + "\"";
    }
    case napi_bigint: return "bigint";
    case napi_symbol: return "symbol";
    case napi_function: return "function";
    default: break;
  }
  if (value.IsArray()) return "array of length " + std::to_string(value.As<Napi::Array>().Length());
  if (value.IsTypedArray()) {
    static const char* const kNames[] = {"Int8Array",    "Uint8Array",   "Uint8ClampedArray", "Int16Array",     "Uint16Array",  "Int32Array",
                                         "Uint32Array",  "Float32Array", "Float64Array",      "BigInt64Array",  "BigUint64Array"};
    const napi_typedarray_type type = value.As<Napi::TypedArray>().TypedArrayType();
    const char* name = static_cast<size_t>(type) < sizeof(kNames) / sizeof(kNames[0]) ? kNames[type] : "TypedArray";
    return std::string(name) + " of length " + std::to_string(value.As<Napi::TypedArray>().ElementLength());
  }
  return "object";
}

Napi::Error MakeJsError(Napi::Env env, const EngineError& error) {
  Napi::Error js = Napi::Error::New(env, error.what());
  js.Set("code", Napi::String::New(env, ErrorCodeName(error.code())));
  // Set for the codes that carry them (the caller's mistakes), absent on the others.
  if (!error.argument().empty()) {
    js.Set("argument", Napi::String::New(env, error.argument()));
    if (error.code() != ErrorCode::kDisposed) {
      js.Set("expected", Napi::String::New(env, error.expected()));
      js.Set("actual", Napi::String::New(env, error.actual()));
    }
  }
  return js;
}

EngineError ClassifyException(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const EngineError& e) {
    return e;
  } catch (const std::bad_alloc&) {
    return EngineError(ErrorCode::kOutOfMemory, "out of host memory");
  } catch (const std::exception& e) {
    return EngineError(ErrorCode::kInternal, std::string("internal error: ") + e.what());
  } catch (...) {
    return EngineError(ErrorCode::kInternal, "internal error: unknown exception");
  }
}

// Making or throwing the error can itself fail once the environment is being torn down (a worker
// thread terminated during the call): nothing can catch it then, and a C++ exception escaping
// here would abort the process, so that failure is dropped.
Napi::Value GuardJs(Napi::Env env, const std::function<Napi::Value()>& body) {
  try {
    return body();
  } catch (const Napi::Error& e) {
    try {
      e.ThrowAsJavaScriptException();
    } catch (...) {
    }
  } catch (...) {
    try {
      MakeJsError(env, ClassifyException(std::current_exception())).ThrowAsJavaScriptException();
    } catch (...) {
    }
  }
  return env.Undefined();
}

}  // namespace perceiver
