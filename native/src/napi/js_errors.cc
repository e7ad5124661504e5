#include "napi/js_errors.h"

#include <new>

namespace perceiver {

Napi::Error MakeJsError(Napi::Env env, ErrorCode code, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, ErrorCodeName(code)));
  return error;
}

void ClassifyException(std::exception_ptr error, ErrorCode* code, std::string* message) {
  try {
    std::rethrow_exception(error);
  } catch (const EngineError& e) {
    *code = e.code();
    *message = e.what();
  } catch (const std::bad_alloc&) {
    *code = ErrorCode::kOutOfMemory;
    *message = "out of host memory";
  } catch (const std::exception& e) {
    *code = ErrorCode::kInternal;
    *message = std::string("internal error: ") + e.what();
  } catch (...) {
    *code = ErrorCode::kInternal;
    *message = "internal error: unknown exception";
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
    ErrorCode code;
    std::string message;
    ClassifyException(std::current_exception(), &code, &message);
    try {
      MakeJsError(env, code, message).ThrowAsJavaScriptException();
    } catch (...) {
    }
  }
  return env.Undefined();
}

}  // namespace perceiver
