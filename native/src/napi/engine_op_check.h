// engineOpCheck: the CPU backend's fused ops against a double-precision reference (see .cc).
#pragma once

#include <napi.h>

namespace perceiver {

Napi::Value EngineOpCheck(const Napi::CallbackInfo& info);

}  // namespace perceiver
