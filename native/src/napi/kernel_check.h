#pragma once

#include <napi.h>

namespace perceiver {

Napi::Value KernelCheck(const Napi::CallbackInfo& info);

}  // namespace perceiver
