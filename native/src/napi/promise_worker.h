// One slow native call on libuv's pool, settled as a promise (the node-llama-cpp pattern): `work`
// runs on the pool, `settle` turns its result into JavaScript on the main thread, and `finished`
// (optional) runs on the main thread first, whether the work succeeded or not. The worker holds
// `holder` (optional), the JavaScript object whose native state the work reads, so it cannot be
// collected mid-call, and counts itself in AddonState so environment teardown waits for it. An
// engine exception becomes the typed JavaScript error of its code.
//
// Environment teardown: when a worker thread ends (worker.terminate(), or process.exit() inside
// it) with calls in flight, Node waits for them and then runs their completion callbacks while
// JavaScript can no longer run. The promise can then never be observed, so the completion only
// runs `finished` and frees the result (the promise's small handle stays unreleased, as Node-API
// can only release it by settling); nothing that touches JavaScript may throw out of it, since a
// C++ exception escaping a Node callback aborts the whole process.
#pragma once

#include <napi.h>

#include <functional>
#include <string>
#include <utility>

#include "core/engine_error.h"
#include "napi/addon_state.h"
#include "napi/js_errors.h"

namespace perceiver {

// Whether `env` can still run JavaScript. Node-API 8 has no direct query (napi_cannot_run_js comes
// with Node-API 10): once an environment is being torn down, every call that may run JavaScript
// fails with napi_pending_exception although no exception is pending, which is also how
// node-addon-api tells teardown apart (NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS). A property test
// on a fresh object is such a call, and has no effect otherwise. Call inside a handle scope.
inline bool CanRunJavaScript(napi_env env) {
  napi_value probe = nullptr;
  if (napi_create_object(env, &probe) != napi_ok) return false;
  bool has = false;
  return napi_has_named_property(env, probe, "probe", &has) == napi_ok;
}

template <typename Result>
class PromiseWorker final : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* name, Napi::Object holder, AddonState* state, std::function<Result()> work,
                std::function<Napi::Value(Napi::Env, Result&)> settle, std::function<void()> finished = nullptr)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        state_(state),
        work_(std::move(work)),
        settle_(std::move(settle)),
        finished_(std::move(finished)) {
    if (!holder.IsEmpty()) holder_ = Napi::Persistent(holder);
  }

  // Queues the work and returns its promise. Should queueing fail, the call is undone (`finished`
  // runs, the count drops, the worker is freed) and the error propagates to the caller's GuardJs.
  Napi::Promise Start() {
    Napi::Promise promise = deferred_.Promise();
    state_->Begin();
    try {
      Queue();
    } catch (...) {
      state_->End();
      RunFinished();
      delete this;
      throw;
    }
    return promise;
  }

  // Replaces AsyncWorker's completion (which opens a throwing HandleScope and lets a failed
  // napi_throw escape as a C++ exception): runs `finished`, settles the promise only while
  // JavaScript can run, never throws, and frees the worker.
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    RunFinished();
    napi_handle_scope scope = nullptr;
    if (status != napi_cancelled && napi_open_handle_scope(env, &scope) == napi_ok) {
      if (CanRunJavaScript(env)) Settle(env);
      napi_close_handle_scope(env, scope);
    }
    // The result is destroyed before `work`, whose captures (the graph) own its backend memory.
    Destroy();
  }

 protected:
  void Execute() override {
    try {
      result_ = work_();
    } catch (...) {
      failed_ = true;
      error_ = ClassifyException(std::current_exception());
    }
    state_->End();
  }

 private:
  void RunFinished() noexcept {
    if (!finished_) return;
    try {
      finished_();
    } catch (...) {
      // Bookkeeping only (a model's call count); it has nothing to report to.
    }
  }

  // Resolves with settle's value, or rejects with the call's error, or with settle's own error
  // (out of memory while making the arrays). Should neither work, the environment began to go
  // away during this callback (a terminate() from another thread), and no one can await the
  // promise any more.
  void Settle(Napi::Env env) noexcept {
    try {
      if (failed_) deferred_.Reject(MakeJsError(env, error_).Value());
      else deferred_.Resolve(settle_(env, result_));
      return;
    } catch (const Napi::Error& e) {
      try {
        deferred_.Reject(e.Value());
      } catch (...) {
      }
    } catch (...) {
      try {
        deferred_.Reject(MakeJsError(env, ClassifyException(std::current_exception())).Value());
      } catch (...) {
      }
    }
  }

  // Destroyed in reverse order: result_ before work_, as OnWorkComplete notes.
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference holder_;
  AddonState* state_;
  std::function<Result()> work_;
  std::function<Napi::Value(Napi::Env, Result&)> settle_;
  std::function<void()> finished_;
  Result result_;
  bool failed_ = false;
  EngineError error_{ErrorCode::kInternal, "internal error: no result"};
};

}  // namespace perceiver
