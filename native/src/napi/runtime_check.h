// The runtime's diagnostics for tests and the GPU check: the counters of the counting decorator
// and the arenas, the device-fault hook, and the arena planner on given lifetimes.
#pragma once

#include <napi.h>

namespace perceiver {

Napi::Value RuntimeCountersJs(const Napi::CallbackInfo& info);
Napi::Value InjectDeviceFaultJs(const Napi::CallbackInfo& info);
Napi::Value PlanArenaJs(const Napi::CallbackInfo& info);

}  // namespace perceiver
