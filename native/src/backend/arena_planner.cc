// Hand-written: the plan is a few dozen lines over the engine's own lifetime records, and the
// libraries that have one (TFLite's, ONNX Runtime's) are not usable apart from their runtimes.
#include "backend/arena_planner.h"

#include <algorithm>
#include <numeric>

namespace perceiver {

namespace {

size_t Aligned(size_t bytes, size_t alignment) { return (std::max<size_t>(bytes, 1) + alignment - 1) & ~(alignment - 1); }

}  // namespace

ArenaPlan PlanArena(const std::vector<TensorLifetime>& tensors, size_t alignment) {
  const size_t n = tensors.size();
  ArenaPlan plan;
  plan.offsets.assign(n, 0);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  // Largest first; ties by first use, so the plan is the same on every run.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return tensors[a].bytes != tensors[b].bytes ? tensors[a].bytes > tensors[b].bytes : tensors[a].first < tensors[b].first;
  });
  std::vector<size_t> placed;  // indices, in placement order
  std::vector<std::pair<size_t, size_t>> busy;  // [offset, end) of placed tensors live beside the current one
  for (size_t i : order) {
    const size_t size = Aligned(tensors[i].bytes, alignment);
    busy.clear();
    for (size_t j : placed) {
      if (LifetimesIntersect(tensors[i], tensors[j])) busy.emplace_back(plan.offsets[j], plan.offsets[j] + Aligned(tensors[j].bytes, alignment));
    }
    std::sort(busy.begin(), busy.end());
    // The smallest gap that holds the tensor (best fit), else the end of the busy ranges.
    size_t best = SIZE_MAX, best_gap = SIZE_MAX, cursor = 0;
    for (const auto& [begin, end] : busy) {
      if (begin > cursor && begin - cursor >= size && begin - cursor < best_gap) {
        best = cursor;
        best_gap = begin - cursor;
      }
      cursor = std::max(cursor, end);
    }
    plan.offsets[i] = best != SIZE_MAX ? best : cursor;
    plan.peak_bytes = std::max(plan.peak_bytes, plan.offsets[i] + size);
    placed.push_back(i);
  }
  // The live bound: a sweep over allocation (+) and release (-) events.
  std::vector<std::pair<int64_t, int64_t>> events;  // (event, +size before -size at the same event)
  for (const TensorLifetime& t : tensors) {
    const int64_t size = static_cast<int64_t>(Aligned(t.bytes, alignment));
    events.emplace_back(t.first, size);
    events.emplace_back(t.last + 1, -size);  // live through `last` inclusive
  }
  std::sort(events.begin(), events.end(), [](const auto& a, const auto& b) { return a.first != b.first ? a.first < b.first : a.second < b.second; });
  int64_t live = 0;
  for (const auto& [event, delta] : events) {
    live += delta;
    plan.live_bound_bytes = std::max(plan.live_bound_bytes, static_cast<size_t>(live));
  }
  return plan;
}

}  // namespace perceiver
