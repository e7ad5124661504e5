#pragma once

#include <napi.h>

namespace perceiver {

Napi::Value CpuKernelCheck(const Napi::CallbackInfo& info);

}  // namespace perceiver
