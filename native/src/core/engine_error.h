// Errors raised inside the native engine. They are plain C++ exceptions carrying a stable code and,
// for the caller's mistakes, what was wrong as data: the argument, what was expected and what came.
// The N-API layer (napi/js_errors.cc) sets these as properties of the JavaScript Error, and
// lib/native/binding.ts builds the typed error of the code from them, so no layer parses the text.
// Nothing in the engine calls exit() or abort().
#pragma once

#include <stdexcept>
#include <string>

namespace perceiver {

enum class ErrorCode {
  kInvalidArgument,     // the caller passed something malformed: argument, expected, actual
  kWeightMismatch,      // a weight is missing or has the wrong size: argument is the weight's name
  kOutOfMemory,         // host or device allocation failed
  kBackendUnavailable,  // the requested backend cannot run here
  kDisposed,            // something was used after dispose(): argument names it
  kInternal,            // a bug or an unexpected library failure
};

const char* ErrorCodeName(ErrorCode code);

class EngineError : public std::runtime_error {
 public:
  // The caller's mistakes (invalid argument, weight mismatch, disposed): the message is composed
  // from the fields, in the wording of lib/errors.ts.
  EngineError(ErrorCode code, std::string argument, std::string expected, std::string actual);
  // Failures that are not about an argument (out of memory, backend unavailable, internal).
  EngineError(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}

  ErrorCode code() const { return code_; }
  // Empty for the message-only codes.
  const std::string& argument() const { return argument_; }
  const std::string& expected() const { return expected_; }
  const std::string& actual() const { return actual_; }

 private:
  ErrorCode code_;
  std::string argument_, expected_, actual_;
};

// "Expected <expected> for <argument> but received <actual>".
[[noreturn]] inline void ThrowInvalidArgument(const std::string& argument, const std::string& expected, const std::string& actual) {
  throw EngineError(ErrorCode::kInvalidArgument, argument, expected, actual);
}

// weight "<weight>": expected <expected> but received <actual>.
[[noreturn]] inline void ThrowWeightMismatch(const std::string& weight, const std::string& expected, const std::string& actual) {
  throw EngineError(ErrorCode::kWeightMismatch, weight, expected, actual);
}

// "<what> has been disposed and cannot be used any more".
[[noreturn]] inline void ThrowDisposed(const std::string& what) { throw EngineError(ErrorCode::kDisposed, what, "", ""); }

}  // namespace perceiver
