// cuBLASLt, loaded at run time with dlopen like cuBLAS (cublas_library.h says why). Only what the
// engine calls is declared, with the ABI values of cublasLt.h; cublaslt_abi_check.cc compares
// every declaration here with the real header wherever one is installed (the GPU machine), with
// static_asserts on sizes, offsets and enum values, so a drift fails the build there.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace perceiver::cuda::lt {

using Status = int;  // cublasStatus_t; 0 is success
using Handle = struct cublasLtContext*;
struct MatmulDescOpaque;
struct MatrixLayoutOpaque;
struct PreferenceOpaque;
using MatmulDesc = MatmulDescOpaque*;
using MatrixLayout = MatrixLayoutOpaque*;
using Preference = PreferenceOpaque*;

// cublasLtMatmulAlgo_t: semi-opaque, copied by value.
struct MatmulAlgo {
  uint64_t data[8];
};

// cublasLtMatmulHeuristicResult_t.
struct HeuristicResult {
  MatmulAlgo algo;
  size_t workspace_size;
  Status state;
  float waves_count;
  int reserved[4];
};

// cublasLtMatmulDescAttributes_t (the ones used).
enum MatmulDescAttribute : int {
  kDescTransA = 3,
  kDescTransB = 4,
  kDescEpilogue = 7,
  kDescBiasPointer = 8,
  kDescBiasDataType = 26,
};
// cublasLtMatrixLayoutAttribute_t.
enum MatrixLayoutAttribute : int {
  kLayoutBatchCount = 5,
  kLayoutStridedBatchOffset = 6,
};
// cublasLtMatmulPreferenceAttributes_t.
enum PreferenceAttribute : int {
  kPrefMaxWorkspaceBytes = 1,
  kPrefMinAlignmentA = 5,
  kPrefMinAlignmentB = 6,
  kPrefMinAlignmentC = 7,
  kPrefMinAlignmentD = 8,
};
// cublasLtEpilogue_t.
enum Epilogue : uint32_t {
  kEpilogueDefault = 1,
  kEpilogueBias = 4,
  kEpilogueGelu = 32,
  kEpilogueGeluBias = 36,
};

struct Library {
  Status (*Create)(Handle*) = nullptr;
  Status (*Destroy)(Handle) = nullptr;
  size_t (*GetVersion)() = nullptr;
  Status (*MatmulDescCreate)(MatmulDesc*, int compute_type, int scale_type) = nullptr;
  Status (*MatmulDescDestroy)(MatmulDesc) = nullptr;
  Status (*MatmulDescSetAttribute)(MatmulDesc, int attribute, const void* value, size_t bytes) = nullptr;
  Status (*MatrixLayoutCreate)(MatrixLayout*, int type, uint64_t rows, uint64_t cols, int64_t ld) = nullptr;
  Status (*MatrixLayoutDestroy)(MatrixLayout) = nullptr;
  Status (*MatrixLayoutSetAttribute)(MatrixLayout, int attribute, const void* value, size_t bytes) = nullptr;
  Status (*PreferenceCreate)(Preference*) = nullptr;
  Status (*PreferenceDestroy)(Preference) = nullptr;
  Status (*PreferenceSetAttribute)(Preference, int attribute, const void* value, size_t bytes) = nullptr;
  Status (*AlgoGetHeuristic)(Handle, MatmulDesc, MatrixLayout a, MatrixLayout b, MatrixLayout c, MatrixLayout d, Preference,
                             int requested, HeuristicResult* results, int* returned) = nullptr;
  Status (*Matmul)(Handle, MatmulDesc, const void* alpha, const void* a, MatrixLayout a_layout, const void* b,
                   MatrixLayout b_layout, const void* beta, const void* c, MatrixLayout c_layout, void* d, MatrixLayout d_layout,
                   const MatmulAlgo* algo, void* workspace, size_t workspace_bytes, cudaStream_t stream) = nullptr;
  std::string path;  // the file that was loaded
};

// The process-wide library, loaded on first use; null (and `why` set) when it cannot be loaded:
// the backend then keeps to cuBLAS's GemmEx.
const Library* Load(std::string* why);

}  // namespace perceiver::cuda::lt
