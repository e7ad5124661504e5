// The bfloat16 instantiations of the tensor-core flash attention (one file per dtype, so nvcc
// compiles the two in parallel).
#include "backend/cuda/kernels/flash_attention.cuh"

namespace perceiver::cuda::flash {
#define PERCEIVER_FLASH_BF16(...) PERCEIVER_FLASH_INSTANTIATE(__nv_bfloat16, __VA_ARGS__)
PERCEIVER_FLASH_CONFIGS(PERCEIVER_FLASH_BF16)
}  // namespace perceiver::cuda::flash
