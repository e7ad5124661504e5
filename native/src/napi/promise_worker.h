// One slow native call on libuv's pool, settled as a promise (the node-llama-cpp pattern): `work`
// runs on the pool, `settle` turns its result into JavaScript on the main thread, and `finished`
// (optional) runs on the main thread first, whether the work succeeded or not. The worker holds
// `holder`, the JavaScript object whose native state the work reads, so it cannot be collected
// mid-call, and counts itself in AddonState so environment teardown waits for it. An engine
// exception becomes the typed JavaScript error of its code.
#pragma once

#include <napi.h>

#include <functional>
#include <string>
#include <utility>

#include "core/engine_error.h"
#include "napi/addon_state.h"
#include "napi/js_errors.h"

namespace perceiver {

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
    holder_ = Napi::Persistent(holder);
  }

  Napi::Promise Start() {
    state_->Begin();
    Queue();
    return deferred_.Promise();
  }

 protected:
  void Execute() override {
    try {
      result_ = work_();
    } catch (...) {
      failed_ = true;
      ClassifyException(std::current_exception(), &code_, &message_);
    }
    state_->End();
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (finished_) finished_();
    if (failed_) {
      deferred_.Reject(MakeJsError(env, code_, message_).Value());
      return;
    }
    try {
      deferred_.Resolve(settle_(env, result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& error) override {
    if (finished_) finished_();
    deferred_.Reject(error.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference holder_;
  AddonState* state_;
  std::function<Result()> work_;
  std::function<Napi::Value(Napi::Env, Result&)> settle_;
  std::function<void()> finished_;
  Result result_;
  bool failed_ = false;
  ErrorCode code_ = ErrorCode::kInternal;
  std::string message_;
};

}  // namespace perceiver
