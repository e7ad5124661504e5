// Per-environment state (the main thread and each worker thread that loads the addon get their
// own). Its environment cleanup hook waits for calls still running on libuv's pool before the
// environment, and the weight buffers those calls read, are torn down.
#pragma once

#include <napi.h>

#include <condition_variable>
#include <mutex>

namespace perceiver {

struct AddonState {
  Napi::FunctionReference encoding_class;       // NativeEncoding, one class per environment
  Napi::FunctionReference device_tensor_class;  // NativeDeviceTensor
  std::mutex mutex;
  std::condition_variable idle;
  int running = 0;  // PromiseWorker calls between Queue() and the end of their work on the pool

  void Begin() {
    std::lock_guard<std::mutex> lock(mutex);
    ++running;
  }
  void End() {
    std::lock_guard<std::mutex> lock(mutex);
    if (--running == 0) idle.notify_all();
  }
  void WaitIdle() {
    std::unique_lock<std::mutex> lock(mutex);
    idle.wait(lock, [this] { return running == 0; });
  }
};

AddonState* GetAddonState(Napi::Env env);

}  // namespace perceiver
