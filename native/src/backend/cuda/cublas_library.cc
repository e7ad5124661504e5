#include "backend/cuda/cublas_library.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "backend/cuda/shared_library.h"

#include "backend/backend.h"
#include "backend/cuda/cuda_check.h"
#include "core/engine_error.h"

namespace perceiver::cuda {

namespace {

struct LoadResult {
  CublasLibrary library;
  bool ok = false;
  std::string error;
};

const LoadResult& Load() {
  static LoadResult result;
  static std::once_flag once;
  std::call_once(once, [] {
    // PERCEIVER_CUBLAS names a specific file; else the sonames of CUDA 13 and 12, then the
    // development symlink.
    std::string tried;
    void* handle = OpenFirstLibrary({std::getenv("PERCEIVER_CUBLAS"), "libcublas.so.13", "libcublas.so.12", "libcublas.so"}, &result.library.path, &tried);
    if (handle == nullptr) {
      result.error = "cuBLAS could not be loaded (" + tried +
                     "). Install the CUDA toolkit's cuBLAS (libcublas.so.13 or .12) and make it findable "
                     "(LD_LIBRARY_PATH), or set PERCEIVER_CUBLAS to its path";
      return;
    }
    auto sym = [&](const char* name) -> void* {
      void* p = dlsym(handle, name);
      if (p == nullptr && result.error.empty()) result.error = std::string("cuBLAS at ") + result.library.path + " lacks " + name;
      return p;
    };
    CublasLibrary& lib = result.library;
    lib.Create = reinterpret_cast<decltype(lib.Create)>(sym("cublasCreate_v2"));
    lib.Destroy = reinterpret_cast<decltype(lib.Destroy)>(sym("cublasDestroy_v2"));
    lib.SetStream = reinterpret_cast<decltype(lib.SetStream)>(sym("cublasSetStream_v2"));
    lib.SetWorkspace = reinterpret_cast<decltype(lib.SetWorkspace)>(sym("cublasSetWorkspace_v2"));
    lib.GemmEx = reinterpret_cast<decltype(lib.GemmEx)>(sym("cublasGemmEx"));
    lib.GemmStridedBatchedEx = reinterpret_cast<decltype(lib.GemmStridedBatchedEx)>(sym("cublasGemmStridedBatchedEx"));
    result.ok = result.error.empty();
  });
  return result;
}

}  // namespace

const CublasLibrary& Cublas() {
  const LoadResult& r = Load();
  if (!r.ok) throw EngineError(ErrorCode::kBackendUnavailable, r.error);
  return r.library;
}

bool CublasLoadable(std::string* detail) {
  const LoadResult& r = Load();
  *detail = r.ok ? r.library.path : r.error;
  return r.ok;
}

namespace {

// The errors that leave the CUDA context unusable for the rest of the process: every later call
// would fail with them again.
bool Sticky(cudaError_t status) {
  switch (status) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorLaunchTimeout:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorContextIsDestroyed:
      return true;
    default:
      return false;
  }
}

}  // namespace

[[noreturn]] void ThrowCudaError(cudaError_t status, const char* what, const char* file, int line) {
  const std::string message = std::string("CUDA error ") + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) +
                              ") in " + what + " at " + file + ":" + std::to_string(line);
  if (Sticky(status)) throw DeviceFault(message + "; the CUDA context is lost");
  (void)cudaGetLastError();  // clear a non-sticky launch error so the model stays usable
  if (status == cudaErrorMemoryAllocation) {
    throw EngineError(ErrorCode::kOutOfMemory, "GPU out of memory: " + message + "; retry with a smaller batch");
  }
  if (status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver || status == cudaErrorInvalidDevice) {
    throw EngineError(ErrorCode::kBackendUnavailable, message);
  }
  throw EngineError(ErrorCode::kInternal, message);
}

[[noreturn]] void ThrowCublasError(int status, const char* what, const char* file, int line) {
  const std::string message = "cuBLAS error " + std::to_string(status) + " in " + what + " at " + file + ":" + std::to_string(line);
  if (status == 3) throw EngineError(ErrorCode::kOutOfMemory, "GPU out of memory (cuBLAS): " + message);  // CUBLAS_STATUS_ALLOC_FAILED
  throw EngineError(ErrorCode::kInternal, message);
}

}  // namespace perceiver::cuda
