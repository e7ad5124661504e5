#include "backend/cuda/cublaslt_library.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "backend/cuda/shared_library.h"

namespace perceiver::cuda::lt {

namespace {

struct LoadResult {
  Library library;
  bool ok = false;
  std::string error;
};

const LoadResult& LoadOnce() {
  static LoadResult result;
  static std::once_flag once;
  std::call_once(once, [] {
    // PERCEIVER_CUBLASLT names a specific file; else the sonames of CUDA 13 and 12, then the
    // development symlink.
    std::string tried;
    void* handle = OpenFirstLibrary({std::getenv("PERCEIVER_CUBLASLT"), "libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"}, &result.library.path, &tried);
    if (handle == nullptr) {
      result.error = "cuBLASLt could not be loaded (" + tried + "); set PERCEIVER_CUBLASLT to its path";
      return;
    }
    auto sym = [&](const char* name) -> void* {
      void* p = dlsym(handle, name);
      if (p == nullptr && result.error.empty()) result.error = std::string("cuBLASLt at ") + result.library.path + " lacks " + name;
      return p;
    };
    Library& lib = result.library;
    lib.Create = reinterpret_cast<decltype(lib.Create)>(sym("cublasLtCreate"));
    lib.Destroy = reinterpret_cast<decltype(lib.Destroy)>(sym("cublasLtDestroy"));
    lib.GetVersion = reinterpret_cast<decltype(lib.GetVersion)>(sym("cublasLtGetVersion"));
    lib.MatmulDescCreate = reinterpret_cast<decltype(lib.MatmulDescCreate)>(sym("cublasLtMatmulDescCreate"));
    lib.MatmulDescDestroy = reinterpret_cast<decltype(lib.MatmulDescDestroy)>(sym("cublasLtMatmulDescDestroy"));
    lib.MatmulDescSetAttribute = reinterpret_cast<decltype(lib.MatmulDescSetAttribute)>(sym("cublasLtMatmulDescSetAttribute"));
    lib.MatrixLayoutCreate = reinterpret_cast<decltype(lib.MatrixLayoutCreate)>(sym("cublasLtMatrixLayoutCreate"));
    lib.MatrixLayoutDestroy = reinterpret_cast<decltype(lib.MatrixLayoutDestroy)>(sym("cublasLtMatrixLayoutDestroy"));
    lib.MatrixLayoutSetAttribute = reinterpret_cast<decltype(lib.MatrixLayoutSetAttribute)>(sym("cublasLtMatrixLayoutSetAttribute"));
    lib.PreferenceCreate = reinterpret_cast<decltype(lib.PreferenceCreate)>(sym("cublasLtMatmulPreferenceCreate"));
    lib.PreferenceDestroy = reinterpret_cast<decltype(lib.PreferenceDestroy)>(sym("cublasLtMatmulPreferenceDestroy"));
    lib.PreferenceSetAttribute = reinterpret_cast<decltype(lib.PreferenceSetAttribute)>(sym("cublasLtMatmulPreferenceSetAttribute"));
    lib.AlgoGetHeuristic = reinterpret_cast<decltype(lib.AlgoGetHeuristic)>(sym("cublasLtMatmulAlgoGetHeuristic"));
    lib.Matmul = reinterpret_cast<decltype(lib.Matmul)>(sym("cublasLtMatmul"));
    result.ok = result.error.empty();
  });
  return result;
}

}  // namespace

const Library* Load(std::string* why) {
  const LoadResult& r = LoadOnce();
  if (!r.ok && why != nullptr) *why = r.error;
  return r.ok ? &r.library : nullptr;
}

}  // namespace perceiver::cuda::lt
