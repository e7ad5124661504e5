// The float16 instantiations of the tensor-core flash attention (one file per dtype, so nvcc
// compiles the two in parallel).
#include "backend/cuda/kernels/flash_attention.cuh"

namespace perceiver::cuda::flash {
#define PERCEIVER_FLASH_FP16(...) PERCEIVER_FLASH_INSTANTIATE(__half, __VA_ARGS__)
PERCEIVER_FLASH_CONFIGS(PERCEIVER_FLASH_FP16)
}  // namespace perceiver::cuda::flash
