// Turns the JavaScript model description built by lib/modeling (plain objects naming weights)
// plus the weights object (name -> Float32Array) into the engine's module tree. Every size is
// checked here again, natively, because memory safety cannot rest on the TypeScript layer alone.
#pragma once

#include <napi.h>

#include "backend/backend.h"
#include "model/perceiver_graph.h"

namespace perceiver {

ModelParts ReadModelSpec(const Napi::Object& spec, const Napi::Object& weights, Backend& backend);

}  // namespace perceiver
