#include "backend/arena_backend.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <vector>

namespace perceiver {

namespace {

constexpr size_t kAlignmentBytes = 256;  // cudaMalloc's alignment: vector loads and cuBLASLt's needs hold in the block too
constexpr size_t kIdleBlocksPerPlan = 2;  // two calls of one shape side by side (the CPU backend)

struct Totals {
  std::atomic<int64_t> recorded{0}, replayed{0}, blocks{0};
  std::atomic<uint64_t> block_bytes{0}, last_peak{0}, last_live_bound{0};
};
Totals& Global() {
  static Totals* totals = new Totals();
  return *totals;
}

}  // namespace

ArenaTotals ArenaCountedTotals() {
  Totals& g = Global();
  ArenaTotals t;
  t.recorded_calls = g.recorded.load();
  t.replayed_calls = g.replayed.load();
  t.blocks = g.blocks.load();
  t.block_bytes = g.block_bytes.load();
  t.last_peak_bytes = g.last_peak.load();
  t.last_live_bound_bytes = g.last_live_bound.load();
  return t;
}

struct ArenaBackend::Plan {
  std::string key;
  std::vector<size_t> floats;                            // each allocation's size, in call order
  std::vector<char> escaped;                             // outlived the recorded call: from the backend on replay
  std::vector<size_t> offsets;                           // in floats from the block's start
  std::vector<std::vector<uint32_t>> must_be_released;  // earlier block tensors planned into overlapping bytes
  size_t block_floats = 0;
  std::vector<std::shared_ptr<BackendBuffer>> idle;      // blocks no call is using
};

struct ArenaBackend::CallState : std::enable_shared_from_this<ArenaBackend::CallState> {
  ArenaBackend* arena = nullptr;
  std::string key;
  std::mutex mutex;  // buffers may be released on any thread
  bool active = true;
  int64_t clock = 0;
  std::vector<TensorLifetime> trace;  // per allocation; last < 0 while alive
  std::vector<size_t> floats;
  std::vector<char> in_block;
  std::shared_ptr<Plan> plan;  // the plan being replayed, or null
  std::shared_ptr<BackendBuffer> block;
  bool diverged = false;
};

namespace {

thread_local ArenaBackend::CallState* t_call = nullptr;

// One allocation of a call: its own backend buffer, or a range of the call's block.
class TracedBuffer final : public BackendBuffer {
 public:
  TracedBuffer(std::shared_ptr<ArenaBackend::CallState> state, size_t index, std::unique_ptr<BackendBuffer> own,
               std::shared_ptr<BackendBuffer> block, float* data, size_t floats)
      : state_(std::move(state)), index_(index), own_(std::move(own)), block_(std::move(block)), data_(data), floats_(floats) {}
  ~TracedBuffer() override;
  float* data() override { return data_; }
  size_t size() const override { return floats_; }

 private:
  std::shared_ptr<ArenaBackend::CallState> state_;
  size_t index_;
  std::unique_ptr<BackendBuffer> own_;
  std::shared_ptr<BackendBuffer> block_;  // keeps the block alive for a tensor that outlives its call
  float* data_;
  size_t floats_;
};

TracedBuffer::~TracedBuffer() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  if (state_->active) state_->trace[index_].last = state_->clock++;
}

size_t AlignedFloats(size_t floats) {
  const size_t a = kAlignmentBytes / sizeof(float);
  return (std::max<size_t>(floats, 1) + a - 1) / a * a;
}

}  // namespace

ArenaBackend::ArenaBackend(std::unique_ptr<Backend> inner, size_t max_plans) : inner_(std::move(inner)), max_plans_(max_plans) {}

ArenaBackend::~ArenaBackend() = default;

ArenaBackend::Stats ArenaBackend::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Stats s = stats_;
  s.plans = static_cast<int64_t>(plans_.size());
  return s;
}

ArenaBackend::Call::Call(ArenaBackend& arena, const std::string& key) : exceptions_(std::uncaught_exceptions()) {
  if (t_call != nullptr) return;  // joined to the outer call on this thread
  state_ = std::make_shared<CallState>();
  state_->arena = &arena;
  state_->key = key;
  arena.Begin(*state_, key);
  arena_ = &arena;
  t_call = state_.get();
}

ArenaBackend::Call::~Call() {
  if (arena_ == nullptr) return;
  t_call = nullptr;
  arena_->End(*state_, std::uncaught_exceptions() > exceptions_);
}

void ArenaBackend::Begin(CallState& state, const std::string& key) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = plans_.begin(); it != plans_.end(); ++it) {
      if ((*it)->key != key) continue;
      plans_.splice(plans_.begin(), plans_, it);  // most recently used first
      state.plan = plans_.front();
      if (!state.plan->idle.empty()) {
        state.block = std::move(state.plan->idle.back());
        state.plan->idle.pop_back();
      }
      break;
    }
  }
  if (state.plan != nullptr && state.block == nullptr && state.plan->block_floats > 0) {
    // A block for this plan (the first replay, or calls with one key side by side on the CPU).
    try {
      state.block = inner_->Allocate(state.plan->block_floats);
    } catch (const EngineError& e) {
      if (e.code() != ErrorCode::kOutOfMemory) throw;
      state.plan = nullptr;  // no room for the block: this call allocates tensor by tensor, as before
      return;
    }
    Global().blocks++;
    Global().block_bytes += state.plan->block_floats * sizeof(float);
  }
}

std::unique_ptr<BackendBuffer> ArenaBackend::Allocate(size_t floats) {
  CallState* call = t_call;
  if (call == nullptr || call->arena != this) return inner_->Allocate(floats);
  std::shared_ptr<CallState> state = call->shared_from_this();
  std::unique_lock<std::mutex> lock(state->mutex);
  const size_t i = state->trace.size();
  state->trace.push_back(TensorLifetime{AlignedFloats(floats) * sizeof(float), state->clock++, -1});
  state->floats.push_back(floats);
  state->in_block.push_back(0);
  if (const Plan* plan = state->plan.get(); plan != nullptr && !state->diverged) {
    bool same = i < plan->floats.size() && plan->floats[i] == floats;
    if (same && !plan->escaped[i] && state->block != nullptr) {
      for (uint32_t j : plan->must_be_released[i]) same = same && state->trace[j].last >= 0;
      if (same) {
        state->in_block[i] = 1;
        return std::make_unique<TracedBuffer>(state, i, nullptr, state->block, state->block->data() + plan->offsets[i], floats);
      }
    }
    if (!same) state->diverged = true;  // the rest of this call comes from the backend, and re-plans
  }
  lock.unlock();
  std::unique_ptr<BackendBuffer> own;
  try {
    own = inner_->Allocate(floats);
  } catch (...) {
    std::lock_guard<std::mutex> relock(state->mutex);
    state->trace[i].last = state->clock++;  // never handed out
    throw;
  }
  float* data = own->data();
  return std::make_unique<TracedBuffer>(state, i, std::move(own), nullptr, data, floats);
}

// Idle blocks are memory held for the next call of a shape; many shapes (text of every length)
// must not each keep theirs. At most twice the largest plan's block stays idle, the most
// recently used shapes' first. Called with mutex_ held.
void ArenaBackend::TrimIdle() {
  size_t largest = 0, idle = 0;
  for (const auto& plan : plans_) {
    largest = std::max(largest, plan->block_floats);
    idle += plan->idle.size() * plan->block_floats;
  }
  for (auto it = plans_.rbegin(); it != plans_.rend() && idle > 2 * largest; ++it) {
    while (!(*it)->idle.empty() && idle > 2 * largest) {
      idle -= (*it)->block_floats;
      (*it)->idle.pop_back();
    }
  }
}

void ArenaBackend::End(CallState& state, bool failed) {
  {
    std::lock_guard<std::mutex> lock(state.mutex);
    state.active = false;
  }
  // Buffers that outlive the call hold its state: it must not keep the plan (and its idle
  // blocks) or the block alive beyond the arena (each arena buffer holds its own block).
  struct Release {
    CallState& state;
    ~Release() {
      state.plan.reset();
      state.block.reset();
    }
  } release{state};
  // Nothing touches the record now: buffers released from here on see active == false.
  const size_t n = state.trace.size();
  std::vector<char> alive(n, 0);
  bool block_kept = false;  // a tensor in the block outlived the call: the block is not reused
  for (size_t i = 0; i < n; ++i) {
    alive[i] = state.trace[i].last < 0;
    if (alive[i] && state.in_block[i]) block_kept = true;
  }
  const Plan* old = state.plan.get();
  bool replayed = old != nullptr && !state.diverged && !block_kept && n == old->floats.size();
  for (size_t i = 0; replayed && i < n; ++i) replayed = alive[i] == old->escaped[i];

  std::lock_guard<std::mutex> lock(mutex_);
  if (failed) {
    // A call cut short by an error (bad input found midway, out of memory) is no record of the
    // shape: the plan stays as it was, and the block serves again unless a tensor kept it.
    if (state.block != nullptr && !block_kept && old != nullptr && old->idle.size() < kIdleBlocksPerPlan) {
      state.plan->idle.push_back(std::move(state.block));
    }
    TrimIdle();
    return;
  }
  if (replayed) {
    stats_.replayed_calls++;
    Global().replayed++;
    if (state.block != nullptr && old->idle.size() < kIdleBlocksPerPlan) state.plan->idle.push_back(std::move(state.block));
    TrimIdle();
    return;
  }

  // (Re)plan from this call's record.
  auto plan = std::make_shared<Plan>();
  plan->key = state.key;
  plan->floats = state.floats;
  plan->escaped = alive;
  plan->offsets.assign(n, 0);
  plan->must_be_released.assign(n, {});
  std::vector<size_t> placed;  // indices of the tensors planned into the block
  std::vector<TensorLifetime> lifetimes;
  for (size_t i = 0; i < n; ++i) {
    if (alive[i]) continue;
    placed.push_back(i);
    lifetimes.push_back(state.trace[i]);
  }
  const ArenaPlan arena = PlanArena(lifetimes, kAlignmentBytes);
  for (size_t p = 0; p < placed.size(); ++p) plan->offsets[placed[p]] = arena.offsets[p] / sizeof(float);
  plan->block_floats = arena.peak_bytes / sizeof(float);
  for (size_t p = 0; p < placed.size(); ++p) {
    const size_t i = placed[p], begin = plan->offsets[i], end = begin + AlignedFloats(state.floats[i]);
    for (size_t q = 0; q < p; ++q) {
      const size_t j = placed[q], other = plan->offsets[j];
      if (other < end && begin < other + AlignedFloats(state.floats[j])) plan->must_be_released[i].push_back(static_cast<uint32_t>(j));
    }
  }
  // Blocks of the plan it replaces serve it when large enough.
  std::vector<std::shared_ptr<BackendBuffer>> spare;
  if (old != nullptr) spare = std::move(state.plan->idle);
  if (state.block != nullptr && !block_kept) spare.push_back(std::move(state.block));
  for (auto& block : spare) {
    if (block->size() >= plan->block_floats && plan->idle.size() < kIdleBlocksPerPlan) plan->idle.push_back(std::move(block));
  }
  plans_.remove_if([&](const std::shared_ptr<Plan>& p) { return p->key == state.key; });
  plans_.push_front(std::move(plan));
  while (plans_.size() > max_plans_) plans_.pop_back();
  TrimIdle();
  stats_.recorded_calls++;
  stats_.last_peak_bytes = arena.peak_bytes;
  stats_.last_live_bound_bytes = arena.live_bound_bytes;
  Global().recorded++;
  Global().last_peak = arena.peak_bytes;
  Global().last_live_bound = arena.live_bound_bytes;
  // What the recorded call allocated is cached by the backend for reuse; the plan serves those
  // sizes from now on, so the cache only holds memory (the optical-flow decoder's 3 GiB).
  inner_->ReleaseCachedMemory();
}

}  // namespace perceiver
