// blasBenchmark(m, n, k, repeats): the machine's sgemm rate through the very OpenBLAS the engine
// links, threaded by OpenBLAS itself over every core, so benchmarks can report the model's speed
// as a fraction of the best sgemm this machine does. Runs off the main thread.
//
// The engine keeps OpenBLAS single-threaded and splits products over its own pool
// (backend/cpu/ops/linear.cc); for the measurement OpenBLAS gets every core, and is set back after.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "napi/blas_benchmark.h"
#include "napi/js_errors.h"
#include "napi/promise_worker.h"

namespace perceiver {

void ConfigureCpuBlas() {
  // OpenBLAS serves only this measurement now (the CPU backend has its own kernels); outside it
  // it stays single-threaded so its threads never spin beside the engine's pool.
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

namespace {

struct BlasTiming {
  double best_seconds = 0;
};

// The best of `repeats` timed products (after one warm-up), with OpenBLAS on every core.
BlasTiming TimeSgemm(int m, int n, int k, int repeats) {
  static std::mutex one_at_a_time;
  std::lock_guard<std::mutex> lock(one_at_a_time);
  const int engine_threads = openblas_get_num_threads();
  openblas_set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  struct RestoreThreads {
    int threads;
    ~RestoreThreads() { openblas_set_num_threads(threads); }
  } restore{engine_threads};
  std::vector<float> a(static_cast<size_t>(m) * k, 0.5f), b(static_cast<size_t>(k) * n, 0.25f), c(static_cast<size_t>(m) * n);
  BlasTiming timing;
  timing.best_seconds = 1e30;
  for (int r = 0; r < repeats + 1; ++r) {  // the first run warms caches and threads up
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c.data(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) timing.best_seconds = std::min(timing.best_seconds, s);
  }
  return timing;
}

}  // namespace

Napi::Value BlasBenchmark(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    int dims[4];
    for (int i = 0; i < 4; ++i) {
      if (info.Length() <= static_cast<size_t>(i) || !info[i].IsNumber()) ThrowInvalidArgument("blasBenchmark(m, n, k, repeats): expected four integers");
      const double v = info[i].As<Napi::Number>().DoubleValue();
      if (!(v >= 1 && v <= 16384)) ThrowInvalidArgument("blasBenchmark: every argument must be in [1, 16384]");
      dims[i] = static_cast<int>(v);
    }
    const int m = dims[0], n = dims[1], k = dims[2], repeats = dims[3];
    auto* worker = new PromiseWorker<BlasTiming>(
        env, "perceiver-io:blas-benchmark", Napi::Object(), GetAddonState(env), [=] { return TimeSgemm(m, n, k, repeats); },
        [=](Napi::Env env, BlasTiming& timing) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("seconds", timing.best_seconds);
          out.Set("gflops", 2.0 * m * n * static_cast<double>(k) / timing.best_seconds / 1e9);
          return out;
        });
    return worker->Start();
  });
}

}  // namespace perceiver
