// Errors raised inside the native engine. They are plain C++ exceptions carrying a stable code
// that the N-API layer turns into a JavaScript Error with `code` set, which the TypeScript layer
// maps onto its typed error classes. Nothing in the engine calls exit() or abort().
#pragma once

#include <stdexcept>
#include <string>

namespace perceiver {

enum class ErrorCode {
  kInvalidArgument,     // the caller passed something malformed
  kWeightMismatch,      // a weight is missing or has the wrong size
  kOutOfMemory,         // host or device allocation failed
  kBackendUnavailable,  // the requested backend cannot run here
  kDisposed,            // the model was disposed
  kInternal,            // a bug or an unexpected library failure
};

const char* ErrorCodeName(ErrorCode code);

class EngineError : public std::runtime_error {
 public:
  EngineError(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] inline void ThrowInvalidArgument(const std::string& message) {
  throw EngineError(ErrorCode::kInvalidArgument, message);
}

}  // namespace perceiver
