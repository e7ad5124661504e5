// A Backend decorator that times every op and prints a per-op summary to stderr when the backend
// is destroyed. Enabled with PERCEIVER_PROFILE=1; it synchronizes after each op, so the figures
// are per-op wall times, not overlapped ones (PERCEIVER_PROFILE=events leaves the CUDA backend
// to time its ops with CUDA events instead, without per-op waits). It forwards the typed op and LoadWeight whole
// (backend.h): nothing it does can change what the inner backend computes or stores.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "backend/backend.h"

namespace perceiver {

namespace {

class ProfilingBackend final : public Backend {
 private:
  struct Stat {
    int64_t calls = 0;
    double seconds = 0;
  };
  template <typename F>
  auto Time(const std::string& name, F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    struct Record {
      ProfilingBackend* self;
      const std::string& name;
      std::chrono::steady_clock::time_point t0;
      ~Record() {
        self->inner_->Synchronize();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::lock_guard<std::mutex> lock(self->mutex_);
        Stat& stat = self->stats_[name];
        stat.calls++;
        stat.seconds += s;
      }
    } record{this, name, t0};
    return f();
  }

 public:
  ProfilingBackend(std::unique_ptr<Backend> inner, bool print) : inner_(std::move(inner)), print_(print) {}
  ~ProfilingBackend() override {
    if (!print_) return;
    double total = 0;
    for (const auto& [name, stat] : stats_) total += stat.seconds;
    std::fprintf(stderr, "perceiver-io profile (%s backend), %.3f s in ops:\n", inner_->name().c_str(), total);
    for (const auto& [name, stat] : stats_) {
      std::fprintf(stderr, "  %-40s %8lld calls %9.3f s %5.1f%%\n", name.c_str(), static_cast<long long>(stat.calls),
                   stat.seconds, total > 0 ? 100.0 * stat.seconds / total : 0.0);
    }
  }

  std::string name() const override { return inner_->name(); }
  Precision precision() const override { return inner_->precision(); }
  bool serializes_calls() const override { return inner_->serializes_calls(); }
  std::unique_ptr<BackendBuffer> Allocate(size_t floats) override {
    return Time("allocate", [&] { return inner_->Allocate(floats); });
  }
  WeightRef LoadWeight(const HostWeight& host, WeightUse use) override {
    return Time("load_weight", [&] { return inner_->LoadWeight(host, use); });
  }
  void CopyToHost(float* dst, const float* src, size_t n) override { Time("copy_to_host", [&] { inner_->CopyToHost(dst, src, n); }); }
  void CopyFromHost(float* dst, const float* src, size_t n) override {
    Time("copy_from_host", [&] { inner_->CopyFromHost(dst, src, n); });
  }
  void BeginCall(const std::string& key, bool replayable) override { inner_->BeginCall(key, replayable); }
  void ReleaseCachedMemory() override { inner_->ReleaseCachedMemory(); }
  void CancelDeferred() override { inner_->CancelDeferred(); }
  void Synchronize() override { inner_->Synchronize(); }
  void Run(const Op& op) override { Time(OpLabel(op), [&] { inner_->Run(op); }); }

 private:
  std::unique_ptr<Backend> inner_;
  bool print_;
  std::mutex mutex_;
  std::map<std::string, Stat> stats_;
};

}  // namespace

std::unique_ptr<Backend> WithProfiling(std::unique_ptr<Backend> backend, bool print_summary) {
  return std::make_unique<ProfilingBackend>(std::move(backend), print_summary);
}

std::unique_ptr<Backend> WithProfilingIfRequested(std::unique_ptr<Backend> backend) {
  const char* flag = std::getenv("PERCEIVER_PROFILE");
  if (flag == nullptr || flag[0] == '\0' || flag[0] == '0') return backend;
  // "events": the CUDA backend times its ops itself with events, without waiting per op.
  if (std::string(flag) == "events") return backend;
  return WithProfiling(std::move(backend), true);
}

}  // namespace perceiver
