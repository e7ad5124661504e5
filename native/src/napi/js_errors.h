// Converts engine exceptions into JavaScript errors carrying a stable `code`, which
// lib/native/binding.ts maps onto the typed error classes.
#pragma once

#include <napi.h>

#include <exception>
#include <functional>
#include <string>

#include "core/engine_error.h"

namespace perceiver {

Napi::Error MakeJsError(Napi::Env env, ErrorCode code, const std::string& message);

// Runs body; any C++ exception becomes a pending JavaScript exception (never std::terminate).
// Returns undefined when body threw.
Napi::Value GuardJs(Napi::Env env, const std::function<Napi::Value()>& body);

// Classifies a caught exception for code running off the main thread.
void ClassifyException(std::exception_ptr error, ErrorCode* code, std::string* message);

}  // namespace perceiver
