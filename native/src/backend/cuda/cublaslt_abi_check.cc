// Our declarations of cuBLAS and cuBLASLt (cublas_library.h, cublaslt_library.h) against the real
// headers, wherever they are installed (the GPU machine; bench/gpu-check.sh builds there): sizes,
// field offsets, enum values, and every prototype's arity, return and parameter kinds. Without the
// headers (this machine, CI) there is nothing to compare and this file compiles to nothing.
#if __has_include(<cublasLt.h>)
#include <cublasLt.h>

#include <cstddef>
#include <type_traits>

#include "backend/cuda/cublas_library.h"
#include "backend/cuda/cublaslt_library.h"

namespace perceiver::cuda::lt {
namespace {

// Values of two different enum types (ours and the header's), compared as integers.
template <typename A, typename B>
constexpr bool SameValue(A a, B b) {
  return static_cast<long long>(a) == static_cast<long long>(b);
}

static_assert(sizeof(Status) == sizeof(cublasStatus_t), "cublasStatus_t");
static_assert(sizeof(MatmulAlgo) == sizeof(cublasLtMatmulAlgo_t) && alignof(MatmulAlgo) == alignof(cublasLtMatmulAlgo_t),
              "cublasLtMatmulAlgo_t");
static_assert(sizeof(HeuristicResult) == sizeof(cublasLtMatmulHeuristicResult_t), "cublasLtMatmulHeuristicResult_t size");
static_assert(offsetof(HeuristicResult, algo) == offsetof(cublasLtMatmulHeuristicResult_t, algo), "heuristic algo");
static_assert(offsetof(HeuristicResult, workspace_size) == offsetof(cublasLtMatmulHeuristicResult_t, workspaceSize), "heuristic workspaceSize");
static_assert(offsetof(HeuristicResult, state) == offsetof(cublasLtMatmulHeuristicResult_t, state), "heuristic state");
static_assert(offsetof(HeuristicResult, waves_count) == offsetof(cublasLtMatmulHeuristicResult_t, wavesCount), "heuristic wavesCount");

static_assert(SameValue(kDescTransA, CUBLASLT_MATMUL_DESC_TRANSA), "CUBLASLT_MATMUL_DESC_TRANSA");
static_assert(SameValue(kDescTransB, CUBLASLT_MATMUL_DESC_TRANSB), "CUBLASLT_MATMUL_DESC_TRANSB");
static_assert(SameValue(kDescEpilogue, CUBLASLT_MATMUL_DESC_EPILOGUE), "CUBLASLT_MATMUL_DESC_EPILOGUE");
static_assert(SameValue(kDescBiasPointer, CUBLASLT_MATMUL_DESC_BIAS_POINTER), "CUBLASLT_MATMUL_DESC_BIAS_POINTER");
static_assert(SameValue(kDescBiasDataType, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE), "CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE");
static_assert(SameValue(kLayoutBatchCount, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT), "CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT");
static_assert(SameValue(kLayoutStridedBatchOffset, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET), "CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET");
static_assert(SameValue(kPrefMaxWorkspaceBytes, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES), "CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES");
static_assert(SameValue(kPrefMinAlignmentA, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES) &&
                  SameValue(kPrefMinAlignmentB, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES) &&
                  SameValue(kPrefMinAlignmentC, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES) &&
                  SameValue(kPrefMinAlignmentD, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES),
              "CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES");
static_assert(SameValue(kEpilogueDefault, CUBLASLT_EPILOGUE_DEFAULT), "CUBLASLT_EPILOGUE_DEFAULT");
static_assert(SameValue(kEpilogueBias, CUBLASLT_EPILOGUE_BIAS), "CUBLASLT_EPILOGUE_BIAS");
static_assert(SameValue(kEpilogueGelu, CUBLASLT_EPILOGUE_GELU), "CUBLASLT_EPILOGUE_GELU");
static_assert(SameValue(kEpilogueGeluBias, CUBLASLT_EPILOGUE_GELU_BIAS), "CUBLASLT_EPILOGUE_GELU_BIAS");
static_assert(sizeof(Epilogue) == sizeof(cublasLtEpilogue_t), "cublasLtEpilogue_t is 32-bit");

// cuBLAS's values (cublas_library.h), from the same headers.
static_assert(SameValue(kOpN, CUBLAS_OP_N) && SameValue(kOpT, CUBLAS_OP_T), "cublasOperation_t");
static_assert(SameValue(kR32F, CUDA_R_32F) && SameValue(kR16F, CUDA_R_16F) && SameValue(kR16BF, CUDA_R_16BF), "cudaDataType_t");
static_assert(SameValue(kCompute32F, CUBLAS_COMPUTE_32F) && SameValue(kCompute32FFastTF32, CUBLAS_COMPUTE_32F_FAST_TF32), "cublasComputeType_t");
static_assert(SameValue(kGemmDefault, CUBLAS_GEMM_DEFAULT), "CUBLAS_GEMM_DEFAULT");

// One parameter (or return) of ours against the header's: both pointers (our opaque types stand
// for theirs), or both integers / enums of one size, or both floating point of one size.
template <typename A, typename B>
constexpr bool SameAbiType() {
  if constexpr (std::is_pointer_v<A> || std::is_pointer_v<B>) {
    return std::is_pointer_v<A> && std::is_pointer_v<B>;
  } else {
    constexpr bool a_int = std::is_integral_v<A> || std::is_enum_v<A>, b_int = std::is_integral_v<B> || std::is_enum_v<B>;
    return sizeof(A) == sizeof(B) && a_int == b_int && std::is_floating_point_v<A> == std::is_floating_point_v<B>;
  }
}

template <typename Ours, typename Theirs>
struct SameAbi : std::false_type {};
template <typename R1, typename... A1, typename R2, typename... A2>
struct SameAbi<R1 (*)(A1...), R2 (*)(A2...)> {
  template <bool same_arity, typename = void>
  struct Params : std::false_type {};
  template <typename Dummy>
  struct Params<true, Dummy> : std::bool_constant<(SameAbiType<A1, A2>() && ...)> {};
  static constexpr bool value = SameAbiType<R1, R2>() && Params<sizeof...(A1) == sizeof...(A2)>::value;
};

#define PERCEIVER_CHECK_PROTOTYPE(member, function) \
  static_assert(SameAbi<decltype(Library::member), decltype(&function)>::value, #function ": our prototype differs from the header's")
PERCEIVER_CHECK_PROTOTYPE(Create, cublasLtCreate);
PERCEIVER_CHECK_PROTOTYPE(Destroy, cublasLtDestroy);
PERCEIVER_CHECK_PROTOTYPE(GetVersion, cublasLtGetVersion);
PERCEIVER_CHECK_PROTOTYPE(MatmulDescCreate, cublasLtMatmulDescCreate);
PERCEIVER_CHECK_PROTOTYPE(MatmulDescDestroy, cublasLtMatmulDescDestroy);
PERCEIVER_CHECK_PROTOTYPE(MatmulDescSetAttribute, cublasLtMatmulDescSetAttribute);
PERCEIVER_CHECK_PROTOTYPE(MatrixLayoutCreate, cublasLtMatrixLayoutCreate);
PERCEIVER_CHECK_PROTOTYPE(MatrixLayoutDestroy, cublasLtMatrixLayoutDestroy);
PERCEIVER_CHECK_PROTOTYPE(MatrixLayoutSetAttribute, cublasLtMatrixLayoutSetAttribute);
PERCEIVER_CHECK_PROTOTYPE(PreferenceCreate, cublasLtMatmulPreferenceCreate);
PERCEIVER_CHECK_PROTOTYPE(PreferenceDestroy, cublasLtMatmulPreferenceDestroy);
PERCEIVER_CHECK_PROTOTYPE(PreferenceSetAttribute, cublasLtMatmulPreferenceSetAttribute);
PERCEIVER_CHECK_PROTOTYPE(AlgoGetHeuristic, cublasLtMatmulAlgoGetHeuristic);
PERCEIVER_CHECK_PROTOTYPE(Matmul, cublasLtMatmul);
#undef PERCEIVER_CHECK_PROTOTYPE

}  // namespace
}  // namespace perceiver::cuda::lt

#if __has_include(<cublas_api.h>)
#include <cublas_api.h>
namespace perceiver::cuda::lt {
namespace {
using cuda::CublasLibrary;
static_assert(SameAbi<decltype(CublasLibrary::GemmEx), decltype(&cublasGemmEx)>::value, "cublasGemmEx");
static_assert(SameAbi<decltype(CublasLibrary::GemmStridedBatchedEx), decltype(&cublasGemmStridedBatchedEx)>::value,
              "cublasGemmStridedBatchedEx");
static_assert(SameAbi<decltype(CublasLibrary::Create), decltype(&cublasCreate_v2)>::value, "cublasCreate_v2");
static_assert(SameAbi<decltype(CublasLibrary::SetStream), decltype(&cublasSetStream_v2)>::value, "cublasSetStream_v2");
static_assert(SameAbi<decltype(CublasLibrary::SetWorkspace), decltype(&cublasSetWorkspace_v2)>::value, "cublasSetWorkspace_v2");
}  // namespace
}  // namespace perceiver::cuda::lt
#endif

#endif  // __has_include(<cublasLt.h>)
