// Module entry: exports NativeModel, NativeDeviceTensor, capabilities() and the diagnostics. Safe
// to load in several environments (worker threads): all per-environment data hangs off the
// environment itself.
#include <napi.h>

#include <thread>

#include "backend/backend.h"
#include "backend/cpu/kernels/gemm.h"
#include "core/thread_pool.h"
#include "napi/addon_state.h"
#include "napi/cpu_kernel_check.h"
#include "napi/device_tensor.h"
#include "napi/engine_op_check.h"
#include "napi/kernel_check.h"
#include "napi/native_model.h"
#include "napi/runtime_check.h"

namespace perceiver {

namespace {

// Runs at environment teardown, before Node-API deletes the instance data and finalizes the
// models (hooks run in reverse order of registration, and Node-API registered its own when the
// environment was created). Node itself drains the environment's pending pool work before it
// runs cleanup hooks, so this is a safety net that normally finds nothing running. It cannot
// deadlock: the count drops on the pool thread at the end of each call's work, which needs
// nothing from this thread, and a call that fails to queue takes its count back (PromiseWorker).
void WaitForRunningCalls(void* arg) { static_cast<AddonState*>(arg)->WaitIdle(); }

Napi::Value Capabilities(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("compiled", true);
  cpu.Set("available", true);
  // The micro-kernels the products run ("avx512", "avx2", ...), chosen once from CPUID.
  cpu.Set("gemm", perceiver::cpu::GemmIsa());
  cpu.Set("threads", ThreadPool::Global().size());
  cpu.Set("dtypes", [&] {
    Napi::Array a = Napi::Array::New(env, 2);
    a.Set(0u, "float32");
    a.Set(1u, "bfloat16");
    return a;
  }());

  const CudaStatus status = ProbeCuda();
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("compiled", status.compiled);
  cuda.Set("available", status.available);
  if (!status.available) cuda.Set("reason", status.reason);
  cuda.Set("deviceCount", status.device_count);
  Napi::Array devices = Napi::Array::New(env, status.devices.size());
  for (size_t i = 0; i < status.devices.size(); ++i) devices.Set(static_cast<uint32_t>(i), status.devices[i]);
  cuda.Set("devices", devices);
  if (!status.cublas.empty()) cuda.Set("cublas", status.cublas);
  if (!status.cublaslt.empty()) cuda.Set("cublasLt", status.cublaslt);
  // CUDA versions as "13.0" (the runtime linked in; the newest the driver supports), when known.
  const auto cuda_version = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  if (status.runtime_version > 0) cuda.Set("runtimeVersion", cuda_version(status.runtime_version));
  if (status.driver_version > 0) cuda.Set("driverVersion", cuda_version(status.driver_version));
  Napi::Array dtypes = Napi::Array::New(env, 4);
  const char* names[] = {"float32", "tfloat32", "float16", "bfloat16"};
  for (uint32_t i = 0; i < 4; ++i) dtypes.Set(i, names[i]);
  cuda.Set("dtypes", dtypes);

  Napi::Object out = Napi::Object::New(env);
  out.Set("cpu", cpu);
  out.Set("cuda", cuda);
  return out;
}

// cudaMemoryInfo(device) -> { free, total } in bytes, for benchmarks' memory figures.
Napi::Value CudaMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int device = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  size_t free_bytes = 0, total_bytes = 0;
  CudaMemoryInfo(device, &free_bytes, &total_bytes);
  Napi::Object out = Napi::Object::New(env);
  out.Set("free", static_cast<double>(free_bytes));
  out.Set("total", static_cast<double>(total_bytes));
  return out;
}

}  // namespace

AddonState* GetAddonState(Napi::Env env) { return env.GetInstanceData<AddonState>(); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* state = new AddonState();
  env.SetInstanceData<AddonState>(state);
  napi_add_env_cleanup_hook(env, WaitForRunningCalls, state);
  state->encoding_class = Napi::Persistent(NativeEncoding::Define(env));
  state->device_tensor_class = Napi::Persistent(NativeDeviceTensor::Define(env));
  exports.Set("NativeModel", NativeModel::Define(env));
  exports.Set("NativeDeviceTensor", state->device_tensor_class.Value());
  exports.Set("deviceTensorStats", Napi::Function::New(env, DeviceTensorStats, "deviceTensorStats"));
  exports.Set("capabilities", Napi::Function::New(env, Capabilities, "capabilities"));
  exports.Set("kernelCheck", Napi::Function::New(env, KernelCheck, "kernelCheck"));
  exports.Set("cpuKernelCheck", Napi::Function::New(env, CpuKernelCheck, "cpuKernelCheck"));
  exports.Set("engineOpCheck", Napi::Function::New(env, EngineOpCheck, "engineOpCheck"));
  exports.Set("cudaMemoryInfo", Napi::Function::New(env, CudaMemory, "cudaMemoryInfo"));
  exports.Set("runtimeCounters", Napi::Function::New(env, RuntimeCountersJs, "runtimeCounters"));
  exports.Set("injectDeviceFault", Napi::Function::New(env, InjectDeviceFaultJs, "injectDeviceFault"));
  exports.Set("planArena", Napi::Function::New(env, PlanArenaJs, "planArena"));
  return exports;
}

}  // namespace perceiver

static Napi::Object InitPerceiverIo(Napi::Env env, Napi::Object exports) { return perceiver::Init(env, exports); }

NODE_API_MODULE(perceiver_io, InitPerceiverIo)
