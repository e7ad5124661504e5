// Turns the JavaScript model description built by lib/modeling (plain objects naming weights)
// plus the weights object (name -> Float32Array) into the engine's module tree. Every size is
// checked here again, natively, because memory safety cannot rest on the TypeScript layer alone.
#pragma once

#include <napi.h>

#include "backend/backend.h"
#include "model/deferred_weight.h"
#include "model/perceiver_graph.h"

namespace perceiver {

// Runs on the main thread and reads no weight values: every weight goes into `weights_to_load`
// (pointing into the Float32Arrays, which the caller keeps alive and attached until
// LoadAll() has run on a worker thread).
ModelParts ReadModelSpec(const Napi::Object& spec, const Napi::Object& weights, WeightLoadList& weights_to_load);

}  // namespace perceiver
