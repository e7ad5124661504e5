// Module entry: exports NativeModel and capabilities(). Safe to load in several environments
// (worker threads): all per-environment data hangs off the environment itself.
#include <cblas.h>
#include <napi.h>

#include <thread>

#include "backend/backend.h"
#include "core/thread_pool.h"
#include "napi/addon_state.h"
#include "napi/blas_benchmark.h"
#include "napi/native_model.h"

namespace perceiver {

namespace {

// Runs at environment teardown, before Node-API deletes the instance data (hooks run in reverse
// order of registration, and Node-API registered its own when the environment was created).
void WaitForRunningForwards(void* arg) { static_cast<AddonState*>(arg)->WaitIdle(); }

Napi::Value Capabilities(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ConfigureCpuBlas();
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("compiled", true);
  cpu.Set("available", true);
  cpu.Set("blas", openblas_get_config());
  cpu.Set("blasThreads", openblas_get_num_threads());
  cpu.Set("threads", ThreadPool::Global().size());
  cpu.Set("dtypes", [&] {
    Napi::Array a = Napi::Array::New(env, 1);
    a.Set(0u, "float32");
    return a;
  }());

  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("compiled", false);
  cuda.Set("available", false);
  cuda.Set("reason",
           "this build of perceiver-io has no CUDA backend yet; use device 'cpu'");

  Napi::Object out = Napi::Object::New(env);
  out.Set("cpu", cpu);
  out.Set("cuda", cuda);
  return out;
}

}  // namespace

AddonState* GetAddonState(Napi::Env env) { return env.GetInstanceData<AddonState>(); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* state = new AddonState();
  env.SetInstanceData<AddonState>(state);
  napi_add_env_cleanup_hook(env, WaitForRunningForwards, state);
  state->encoding_class = Napi::Persistent(NativeEncoding::Define(env));
  exports.Set("NativeModel", NativeModel::Define(env));
  exports.Set("capabilities", Napi::Function::New(env, Capabilities, "capabilities"));
  exports.Set("blasBenchmark", Napi::Function::New(env, BlasBenchmark, "blasBenchmark"));
  return exports;
}

}  // namespace perceiver

static Napi::Object InitPerceiverIo(Napi::Env env, Napi::Object exports) { return perceiver::Init(env, exports); }

NODE_API_MODULE(perceiver_io, InitPerceiverIo)
