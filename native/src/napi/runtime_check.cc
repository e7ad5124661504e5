#include "napi/runtime_check.h"

#include <string>
#include <vector>

#include "backend/arena_backend.h"
#include "backend/arena_planner.h"
#include "backend/backend.h"
#include "napi/js_errors.h"

namespace perceiver {

namespace {

Napi::Object CountsToJs(Napi::Env env, const RuntimeCounts& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("allocations", static_cast<double>(c.allocations));
  o.Set("syncs", static_cast<double>(c.syncs));
  o.Set("pageableCopies", static_cast<double>(c.pageable_copies));
  return o;
}

// A JavaScript array of non-negative integers (sizes, events).
std::vector<double> ReadNumbers(const Napi::Value& v, const char* what) {
  const std::string argument = std::string("planArena.") + what;
  if (!v.IsArray()) ThrowInvalidArgument(argument, "an array of non-negative integers", "something else");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<double> out(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsNumber()) ThrowInvalidArgument(argument + "[" + std::to_string(i) + "]", "a non-negative integer", "a non-number");
    const double d = e.As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d <= 9007199254740991.0 && d == static_cast<double>(static_cast<int64_t>(d)))) {
      ThrowInvalidArgument(argument + "[" + std::to_string(i) + "]", "a non-negative integer", std::to_string(d));
    }
    out[i] = d;
  }
  return out;
}

}  // namespace

// runtimeCounters() -> totals since the process started (the counting decorator's, where
// PERCEIVER_COUNT_RUNTIME=1 was set when the model loaded, and every arena's).
Napi::Value RuntimeCountersJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    const perceiver::RuntimeCounters c = CountedTotals();
    Napi::Object out = Napi::Object::New(env);
    out.Set("allocations", static_cast<double>(c.allocations));
    out.Set("syncs", static_cast<double>(c.syncs));
    out.Set("hostCopies", static_cast<double>(c.host_copies));
    out.Set("runs", static_cast<double>(c.runs));
    out.Set("internal", CountsToJs(env, c.internal));
    const ArenaTotals a = ArenaCountedTotals();
    Napi::Object arena = Napi::Object::New(env);
    arena.Set("recordedCalls", static_cast<double>(a.recorded_calls));
    arena.Set("replayedCalls", static_cast<double>(a.replayed_calls));
    arena.Set("blocks", static_cast<double>(a.blocks));
    arena.Set("blockBytes", static_cast<double>(a.block_bytes));
    arena.Set("lastPeakBytes", static_cast<double>(a.last_peak_bytes));
    arena.Set("lastLiveBoundBytes", static_cast<double>(a.last_live_bound_bytes));
    out.Set("arena", arena);
    return out;
  });
}

// injectDeviceFault(): the next op of a counted backend throws a DeviceFault.
Napi::Value InjectDeviceFaultJs(const Napi::CallbackInfo& info) {
  perceiver::InjectDeviceFault();
  return info.Env().Undefined();
}

// planArena({ bytes, first, last, alignment? }) -> { offsets, peakBytes, liveBoundBytes }
Napi::Value PlanArenaJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) ThrowInvalidArgument("planArena(request)", "an object", "something else");
    Napi::Object r = info[0].As<Napi::Object>();
    const std::vector<double> bytes = ReadNumbers(r.Get("bytes"), "bytes"), first = ReadNumbers(r.Get("first"), "first"),
                              last = ReadNumbers(r.Get("last"), "last");
    if (first.size() != bytes.size() || last.size() != bytes.size()) {
      ThrowInvalidArgument("planArena.first / last", std::to_string(bytes.size()) + " values each (one per size)",
                           std::to_string(first.size()) + " and " + std::to_string(last.size()));
    }
    size_t alignment = 256;
    if (Napi::Value a = r.Get("alignment"); !a.IsUndefined()) {
      const double d = a.IsNumber() ? a.As<Napi::Number>().DoubleValue() : 0;
      alignment = static_cast<size_t>(d);
      if (!(d >= 1 && d <= 65536 && static_cast<double>(alignment) == d && (alignment & (alignment - 1)) == 0)) {
        ThrowInvalidArgument("planArena.alignment", "a power of two up to 65536", std::to_string(d));
      }
    }
    std::vector<TensorLifetime> tensors(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) {
      if (last[i] < first[i]) {
        ThrowInvalidArgument("planArena.last[" + std::to_string(i) + "]", "at least first[" + std::to_string(i) + "] (" + std::to_string(first[i]) + ")",
                             std::to_string(last[i]));
      }
      tensors[i] = TensorLifetime{static_cast<size_t>(bytes[i]), static_cast<int64_t>(first[i]), static_cast<int64_t>(last[i])};
    }
    const ArenaPlan plan = perceiver::PlanArena(tensors, alignment);
    Napi::Array offsets = Napi::Array::New(env, plan.offsets.size());
    for (size_t i = 0; i < plan.offsets.size(); ++i) offsets.Set(static_cast<uint32_t>(i), static_cast<double>(plan.offsets[i]));
    Napi::Object out = Napi::Object::New(env);
    out.Set("offsets", offsets);
    out.Set("peakBytes", static_cast<double>(plan.peak_bytes));
    out.Set("liveBoundBytes", static_cast<double>(plan.live_bound_bytes));
    return out;
  });
}

}  // namespace perceiver
