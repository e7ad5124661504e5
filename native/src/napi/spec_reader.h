// Turns the JavaScript model description built by lib/modeling (plain objects naming weights)
// plus the weights object (name -> Float32Array) into a validated ModelSpec. Every size is checked
// here again, natively, because memory safety cannot rest on the TypeScript layer alone.
#pragma once

#include <napi.h>

#include "backend/backend.h"
#include "model/model_spec.h"

namespace perceiver {

ModelSpec ReadModelSpec(const Napi::Object& spec, const Napi::Object& weights, Backend& backend);

}  // namespace perceiver
