// A Backend decorator that serves a call's activations from one block per input shape, planned
// once from the call's own tensor lifetimes (arena_planner.h), so a steady-state call allocates
// nothing. Backend-neutral: it records what the graph allocates and when it lets go, and replays.
//
// - A call runs inside an ArenaBackend::Call (RAII, on the calling thread) named by a key that
//   says what determines its allocations (the request's shapes and options, perceiver_graph.cc).
// - The first call with a key allocates from the backend as before and records, per allocation
//   in order, its size and the events (allocations and releases) at which it lived. Its end plans
//   the offsets; what was still alive at the end (outputs kept in backend memory, cache entries)
//   is marked to come from the backend on replay.
// - A later call with the key hands out block + offset for each allocation of the same size in
//   the same order, after checking that every earlier tensor planned into the same bytes has been
//   released. Any difference (another size, a tensor still alive, a cache that filled) ends the
//   replay for that call: the rest comes from the backend, and the call's own record replaces the
//   plan. So a wrong key costs allocations, never memory two tensors share while both live.
// - Blocks are shared-owned by the buffers cut from them: a tensor that outlives its call keeps
//   its block alive, and that block is not handed out again.
// Allocations outside a Call (uploads, load time) go straight to the backend.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>

#include "backend/arena_planner.h"
#include "backend/backend.h"

namespace perceiver {

// Process-wide totals over every arena, for tests and the GPU check.
struct ArenaTotals {
  int64_t recorded_calls = 0, replayed_calls = 0, blocks = 0;
  uint64_t block_bytes = 0;  // all blocks ever allocated
  uint64_t last_peak_bytes = 0, last_live_bound_bytes = 0;  // of the newest plan
};
ArenaTotals ArenaCountedTotals();

class ArenaBackend final : public Backend {
 public:
  struct CallState;
  struct Plan;

  // The scope of one call on this thread. Nested Calls on one thread join the outer one.
  class Call {
   public:
    Call(ArenaBackend& arena, const std::string& key);
    ~Call();
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;

   private:
    ArenaBackend* arena_ = nullptr;  // null when joined to an outer call
    std::shared_ptr<CallState> state_;
    int exceptions_ = 0;  // std::uncaught_exceptions() at the start: a call ended by one is not a record to plan from
  };

  struct Stats {
    int64_t plans = 0;            // plans held now
    int64_t replayed_calls = 0;   // calls served wholly from a plan
    int64_t recorded_calls = 0;   // calls that (re)planned
    size_t last_peak_bytes = 0;   // the newest plan's block size
    size_t last_live_bound_bytes = 0;  // and its lower bound (the most bytes live at one event)
  };

  // max_plans: shapes kept (least recently used dropped with their blocks).
  explicit ArenaBackend(std::unique_ptr<Backend> inner, size_t max_plans = 8);
  ~ArenaBackend() override;

  Stats stats() const;
  Backend& inner() { return *inner_; }

  std::string name() const override { return inner_->name(); }
  Precision precision() const override { return inner_->precision(); }
  bool serializes_calls() const override { return inner_->serializes_calls(); }
  std::unique_ptr<BackendBuffer> Allocate(size_t floats) override;
  WeightRef LoadWeight(const HostWeight& host, WeightUse use) override { return inner_->LoadWeight(host, use); }
  void CopyToHost(float* dst, const float* src, size_t n) override { inner_->CopyToHost(dst, src, n); }
  void CopyToHostDeferred(float* dst, const float* src, size_t n) override { inner_->CopyToHostDeferred(dst, src, n); }
  void CopyFromHost(float* dst, const float* src, size_t n) override { inner_->CopyFromHost(dst, src, n); }
  void BeginCall(const std::string& key, bool replayable) override { inner_->BeginCall(key, replayable); }
  void ReleaseCachedMemory() override { inner_->ReleaseCachedMemory(); }
  void CancelDeferred() override { inner_->CancelDeferred(); }
  void Synchronize() override { inner_->Synchronize(); }
  void Run(const Op& op) override { inner_->Run(op); }
  RuntimeCounts InternalCounts() const override { return inner_->InternalCounts(); }

 private:
  void Begin(CallState& state, const std::string& key);
  void End(CallState& state, bool failed);
  void TrimIdle();

  std::unique_ptr<Backend> inner_;
  size_t max_plans_;
  mutable std::mutex mutex_;
  std::list<std::shared_ptr<Plan>> plans_;  // most recently used first
  Stats stats_;
};

}  // namespace perceiver
