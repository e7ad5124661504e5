// Offsets in one block of memory for the tensors of one call, planned once per shape from their
// lifetimes (backend-neutral: the arena decorator, arena_backend.cc, records the lifetimes and
// replays the plan). Two tensors may share bytes only when their lifetimes do not intersect.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace perceiver {

// A tensor of `bytes`, live from the event `first` (its allocation) to the event `last` (its
// release), both inclusive; events are numbered in the order they happen in the call.
struct TensorLifetime {
  size_t bytes = 0;
  int64_t first = 0, last = 0;
};

struct ArenaPlan {
  std::vector<size_t> offsets;  // per tensor, in bytes from the block's start, each aligned
  size_t peak_bytes = 0;        // the block's size: max over tensors of offset + aligned size
  // The most bytes live at any one event (aligned sizes): no placement can use less than this.
  size_t live_bound_bytes = 0;
};

// Greedy by size (largest first, each at the lowest offset where it fits beside the placed
// tensors whose lifetimes intersect its own): the classic heuristic of static-graph inference
// engines, usually within a few percent of the live bound. `alignment` must be a power of two.
ArenaPlan PlanArena(const std::vector<TensorLifetime>& tensors, size_t alignment = 256);

// Whether tensors a and b are live at some common event.
inline bool LifetimesIntersect(const TensorLifetime& a, const TensorLifetime& b) { return a.first <= b.last && b.first <= a.last; }

}  // namespace perceiver
