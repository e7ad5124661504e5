// cuBLAS, loaded at run time with dlopen. One binary then serves CPU-only machines (where cuBLAS
// is absent) and GPU machines (where it is found), and a missing library is an explained error
// instead of a load failure of the whole addon. Only the few entry points the engine calls are
// declared here, with the ABI values of cublas_api.h, so building needs no cuBLAS headers (this
// machine and CI have nvcc and cudart but not cuBLAS).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

namespace perceiver::cuda {

using cublasHandle_t = struct cublasContext*;

enum CublasOperation : int { kOpN = 0, kOpT = 1 };
enum CudaDataType : int { kR32F = 0, kR16F = 2, kR16BF = 14 };
enum CublasComputeType : int { kCompute32F = 68, kCompute32FFastTF32 = 77 };
constexpr int kGemmDefault = -1;

struct CublasLibrary {
  int (*Create)(cublasHandle_t*) = nullptr;
  int (*Destroy)(cublasHandle_t) = nullptr;
  int (*SetStream)(cublasHandle_t, cudaStream_t) = nullptr;
  // A workspace the caller owns: cuBLAS then allocates nothing itself, which CUDA graph capture needs.
  int (*SetWorkspace)(cublasHandle_t, void* workspace, size_t bytes) = nullptr;
  int (*GemmEx)(cublasHandle_t, int transa, int transb, int m, int n, int k, const void* alpha, const void* a, int a_type,
                int lda, const void* b, int b_type, int ldb, const void* beta, void* c, int c_type, int ldc,
                int compute_type, int algo) = nullptr;
  int (*GemmStridedBatchedEx)(cublasHandle_t, int transa, int transb, int m, int n, int k, const void* alpha, const void* a,
                              int a_type, int lda, long long stride_a, const void* b, int b_type, int ldb, long long stride_b,
                              const void* beta, void* c, int c_type, int ldc, long long stride_c, int batch_count,
                              int compute_type, int algo) = nullptr;
  std::string path;  // the file that was loaded
};

// The process-wide library, loaded on first use; throws a backend-unavailable EngineError that
// lists the names tried when none loads.
const CublasLibrary& Cublas();
// Whether cuBLAS can be loaded, without throwing; `detail` gets the path or the reason.
bool CublasLoadable(std::string* detail);

}  // namespace perceiver::cuda
