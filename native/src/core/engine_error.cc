#include "core/engine_error.h"

#include <utility>

namespace perceiver {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "ERR_PERCEIVER_INVALID_ARGUMENT";
    case ErrorCode::kWeightMismatch: return "ERR_PERCEIVER_WEIGHT_MISMATCH";
    case ErrorCode::kOutOfMemory: return "ERR_PERCEIVER_OUT_OF_MEMORY";
    case ErrorCode::kBackendUnavailable: return "ERR_PERCEIVER_BACKEND_UNAVAILABLE";
    case ErrorCode::kDisposed: return "ERR_PERCEIVER_DISPOSED";
    case ErrorCode::kInternal: return "ERR_PERCEIVER_NATIVE";
  }
  return "ERR_PERCEIVER_NATIVE";
}

namespace {

// The same sentences as the classes of lib/errors.ts build from the same fields.
std::string ComposeMessage(ErrorCode code, const std::string& argument, const std::string& expected, const std::string& actual) {
  switch (code) {
    case ErrorCode::kWeightMismatch: return "weight \"" + argument + "\": expected " + expected + " but received " + actual;
    case ErrorCode::kDisposed: return argument + " has been disposed and cannot be used any more";
    default: return "Expected " + expected + " for " + argument + " but received " + actual;
  }
}

}  // namespace

EngineError::EngineError(ErrorCode code, std::string argument, std::string expected, std::string actual)
    : std::runtime_error(ComposeMessage(code, argument, expected, actual)),
      code_(code),
      argument_(std::move(argument)),
      expected_(std::move(expected)),
      actual_(std::move(actual)) {}

}  // namespace perceiver
