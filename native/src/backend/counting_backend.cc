// A Backend decorator that counts, per process, what a steady-state call must not do:
// allocations (Allocate reaching the backend: the arena in front of it missed), host waits
// (Synchronize, and CopyToHost, which blocks by contract) and host copies through the interface,
// plus what the backend did inside its ops (Backend::InternalCounts: real device allocations,
// stream syncs, pageable copies). Like the profiler (profiling_backend.cc) it forwards Run and
// LoadWeight whole. Its one other job is a test hook: InjectDeviceFault() makes the next op throw
// a DeviceFault, as a CUDA illegal address would, so the sticky-error state machine of the graph
// is tested on the CPU (test/runtime.test.ts).
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "backend/backend.h"

namespace perceiver {

namespace {

struct Totals {
  std::atomic<int64_t> allocations{0}, syncs{0}, host_copies{0}, runs{0};
  std::atomic<bool> inject_fault{false};
  std::mutex mutex;                       // guards live
  std::vector<const Backend*> live;       // the inner backends of live counting decorators
  RuntimeCounts retired;                  // internal counts of decorators already destroyed
};

Totals& Global() {
  static Totals* totals = new Totals();  // never destroyed: decorators may outlive static teardown
  return *totals;
}

RuntimeCounts& operator+=(RuntimeCounts& a, const RuntimeCounts& b) {
  a.allocations += b.allocations;
  a.syncs += b.syncs;
  a.pageable_copies += b.pageable_copies;
  return a;
}

class CountingBackend final : public Backend {
 public:
  explicit CountingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {
    std::lock_guard<std::mutex> lock(Global().mutex);
    Global().live.push_back(inner_.get());
  }
  ~CountingBackend() override {
    Totals& g = Global();
    std::lock_guard<std::mutex> lock(g.mutex);
    g.retired += inner_->InternalCounts();
    g.live.erase(std::find(g.live.begin(), g.live.end(), inner_.get()));
  }

  std::string name() const override { return inner_->name(); }
  Precision precision() const override { return inner_->precision(); }
  bool serializes_calls() const override { return inner_->serializes_calls(); }
  std::unique_ptr<BackendBuffer> Allocate(size_t floats) override {
    Global().allocations++;
    return inner_->Allocate(floats);
  }
  WeightRef LoadWeight(const HostWeight& host, WeightUse use) override { return inner_->LoadWeight(host, use); }
  void CopyToHost(float* dst, const float* src, size_t n) override {
    Global().syncs++;
    Global().host_copies++;
    inner_->CopyToHost(dst, src, n);
  }
  void CopyToHostDeferred(float* dst, const float* src, size_t n) override {
    Global().host_copies++;
    inner_->CopyToHostDeferred(dst, src, n);
  }
  void CopyFromHost(float* dst, const float* src, size_t n) override {
    Global().host_copies++;
    inner_->CopyFromHost(dst, src, n);
  }
  void BeginCall(const std::string& key, bool replayable) override { inner_->BeginCall(key, replayable); }
  void ReleaseCachedMemory() override { inner_->ReleaseCachedMemory(); }
  void CancelDeferred() override { inner_->CancelDeferred(); }
  void Synchronize() override {
    Global().syncs++;
    inner_->Synchronize();
  }
  void Run(const Op& op) override {
    Global().runs++;
    if (Global().inject_fault.exchange(false)) {
      throw DeviceFault("injected device fault (test hook) in " + OpLabel(op) + ", as a sticky CUDA error would be");
    }
    inner_->Run(op);
  }
  RuntimeCounts InternalCounts() const override { return inner_->InternalCounts(); }

 private:
  std::unique_ptr<Backend> inner_;
};

}  // namespace

std::unique_ptr<Backend> WithCounting(std::unique_ptr<Backend> backend) { return std::make_unique<CountingBackend>(std::move(backend)); }

std::unique_ptr<Backend> WithCountingIfRequested(std::unique_ptr<Backend> backend) {
  const char* flag = std::getenv("PERCEIVER_COUNT_RUNTIME");
  if (flag == nullptr || flag[0] == '\0' || flag[0] == '0') return backend;
  return WithCounting(std::move(backend));
}

RuntimeCounters CountedTotals() {
  Totals& g = Global();
  RuntimeCounters out;
  out.allocations = g.allocations.load();
  out.syncs = g.syncs.load();
  out.host_copies = g.host_copies.load();
  out.runs = g.runs.load();
  std::lock_guard<std::mutex> lock(g.mutex);
  out.internal = g.retired;
  for (const Backend* b : g.live) out.internal += b->InternalCounts();
  return out;
}

void InjectDeviceFault() { Global().inject_fault = true; }

}  // namespace perceiver
