// Converts engine exceptions into JavaScript errors carrying a stable `code` and, for the caller's
// mistakes, `argument`, `expected` and `actual`, from which lib/native/binding.ts builds the typed
// error of the code.
#pragma once

#include <napi.h>

#include <exception>
#include <functional>
#include <string>

#include "core/engine_error.h"

namespace perceiver {

// A short description of a JavaScript value for an error's `actual`, in the words of lib/errors.ts's
// describeValue: "number 1.5", "string \"x\"", "undefined", "Int32Array of length 4", "object".
std::string DescribeJs(const Napi::Value& value);

Napi::Error MakeJsError(Napi::Env env, const EngineError& error);

// Runs body; any C++ exception becomes a pending JavaScript exception (never std::terminate).
// Returns undefined when body threw.
Napi::Value GuardJs(Napi::Env env, const std::function<Napi::Value()>& body);

// Classifies a caught exception (for code running off the main thread, which keeps it until the
// JavaScript error can be made): an EngineError as it is, anything else as out of memory or internal.
EngineError ClassifyException(std::exception_ptr error);

}  // namespace perceiver
