#pragma once

#include <napi.h>

namespace perceiver {

Napi::Value BlasBenchmark(const Napi::CallbackInfo& info);

}  // namespace perceiver
