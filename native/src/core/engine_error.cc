#include "core/engine_error.h"

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

}  // namespace perceiver
