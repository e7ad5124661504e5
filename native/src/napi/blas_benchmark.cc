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

namespace perceiver {

void ConfigureCpuBlas() {
  // OpenBLAS serves only this measurement now (the CPU backend has its own kernels); outside it
  // it stays single-threaded so its threads never spin beside the engine's pool.
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

namespace {

class BlasBenchmarkWorker final : public Napi::AsyncWorker {
 public:
  BlasBenchmarkWorker(Napi::Env env, int m, int n, int k, int repeats)
      : Napi::AsyncWorker(env, "perceiver-io:blas-benchmark"), deferred_(Napi::Promise::Deferred::New(env)),
        m_(m), n_(n), k_(k), repeats_(repeats) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    static std::mutex one_at_a_time;
    std::lock_guard<std::mutex> lock(one_at_a_time);
    const int engine_threads = openblas_get_num_threads();
    openblas_set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    try {
      std::vector<float> a(static_cast<size_t>(m_) * k_, 0.5f), b(static_cast<size_t>(k_) * n_, 0.25f),
          c(static_cast<size_t>(m_) * n_);
      best_ = 1e30;
      for (int r = 0; r < repeats_ + 1; ++r) {  // the first run warms caches and threads up
        const auto t0 = std::chrono::steady_clock::now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m_, n_, k_, 1.0f, a.data(), k_, b.data(), k_, 0.0f,
                    c.data(), n_);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r > 0) best_ = std::min(best_, s);
      }
    } catch (const std::exception& e) {
      SetError(e.what());
    }
    openblas_set_num_threads(engine_threads);
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("seconds", best_);
    out.Set("gflops", 2.0 * m_ * n_ * static_cast<double>(k_) / best_ / 1e9);
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int m_, n_, k_, repeats_;
  double best_ = 0;
};

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
    auto* worker = new BlasBenchmarkWorker(env, dims[0], dims[1], dims[2], dims[3]);
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  });
}

}  // namespace perceiver
