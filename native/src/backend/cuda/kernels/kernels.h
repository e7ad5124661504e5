// Host launchers of the CUDA kernels, one op per .cu file, each beside its kernel: they size the
// grid, launch on the given stream and check the launch. Every kernel computes in float32; the
// CPU backend's op of the same name (backend/cpu/ops) is its reference (bench/gpu-check.sh and
// test/gpu/*.test.ts compare them on a GPU).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/backend.h"
#include "backend/cuda/kernels/flash_attention_plan.h"

namespace perceiver::cuda {

// y = LayerNorm(x + residual) over the last dim, written as y_dtype (y holds that type); residual
// and sum_out (x + residual, float32) may be null. Row strides in elements. y may alias x when
// y_dtype is float32 and ldy == ldx.
struct LayerNormArgs {
  const float* x = nullptr;
  int64_t ldx = 0;
  const float* residual = nullptr;
  int64_t ld_residual = 0;
  float* sum_out = nullptr;
  int64_t ld_sum = 0;
  int64_t rows = 0, dim = 0;
  const float* gamma = nullptr;
  const float* beta = nullptr;
  float eps = 1e-5f;
  void* y = nullptr;
  int64_t ldy = 0;
  DType y_dtype = DType::kFloat32;
};
void LaunchLayerNorm(const LayerNormArgs& args, cudaStream_t stream);
// The product epilogue where cuBLASLt's cannot serve (erf GELU, a 16-bit output with a residual):
// y[r, c] = gelu?(acc[r, c] + bias[c]) + residual[r % period or r, c], written as y_dtype. acc is
// float32 (a product's output); y may alias acc only for a float32 output with ldy == ld_acc.
struct BiasGeluArgs {
  const float* acc = nullptr;
  int64_t ld_acc = 0;
  int64_t rows = 0, cols = 0;
  const float* bias = nullptr;  // [cols] or null
  bool gelu = false;
  const float* residual = nullptr;
  int64_t ld_residual = 0, residual_period = 0;
  void* y = nullptr;
  int64_t ldy = 0;
  DType y_dtype = DType::kFloat32;
};
void LaunchBiasGelu(const BiasGeluArgs& args, cudaStream_t stream);
void LaunchGelu(float* x, int64_t n, cudaStream_t stream);
void LaunchAddInPlace(float* y, const float* x, int64_t n, cudaStream_t stream);
void LaunchAddRowsBroadcast(float* y, const float* x, int64_t rows, int64_t cols, int64_t period, cudaStream_t stream);
void LaunchScale(float* x, int64_t n, float alpha, cudaStream_t stream);
void LaunchChannelAffine(float* y, int64_t rows, int64_t cols, const float* scale, const float* shift, bool relu,
                         cudaStream_t stream);
void LaunchEmbeddingLookup(const int32_t* ids, int64_t batch, int64_t seq, const float* table, const float* positions,
                           int64_t dim, float* out, cudaStream_t stream);
void LaunchStridedCopy(float* dst, const int64_t* dst_strides, const float* src, const int64_t* src_strides,
                       const int64_t* shape, int rank, cudaStream_t stream);
void LaunchGatherRows(float* dst, const float* src, const int64_t* indices, int64_t count, int64_t batch, int64_t src_rows,
                      int64_t cols, cudaStream_t stream);
void LaunchIm2col(const float* x, int64_t batch, int64_t in_c, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t stride,
                  int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w, float* cols, cudaStream_t stream);
void LaunchMaxPool2d(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, int64_t kernel, int64_t stride,
                     int64_t out_h, int64_t out_w, float* y, cudaStream_t stream);
void LaunchMeanRows(const float* x, int64_t batch, int64_t n, int64_t cols, float* y, cudaStream_t stream);
// float32 -> float16 / bfloat16 (dst holds 16-bit words), and back.
void LaunchConvert(const float* src, int64_t n, bool bfloat16, void* dst, cudaStream_t stream);
void LaunchConvertToFloat(const void* src, int64_t n, bool bfloat16, float* dst, cudaStream_t stream);
// Fourier position features [n, channels] (FourierSpec's layout: positions if concat_pos, then sin,
// then cos of each index dimension's bands) of: positions [n, dims] when given; else flat indices
// `points` into index_dims (PointPositions); else the whole linspace grid over index_dims
// (GridPositions, n = its size). Device pointers; equal to model/position_encoding.cc's values.
struct FourierFeaturesArgs {
  int64_t n = 0;
  int dims = 0;
  int64_t index_dims[kMaxFourierDims] = {};
  int64_t max_resolution[kMaxFourierDims] = {};
  int64_t bands = 0;
  bool concat_pos = true, sine_only = false;
  const float* positions = nullptr;
  const int64_t* points = nullptr;
  float* out = nullptr;
};
void LaunchFourierFeatures(const FourierFeaturesArgs& args, cudaStream_t stream);
// Memory-efficient attention (online softmax over blocks of keys; scores never materialised).
// PrepareAttention, once per backend with its device current: the device's opt-in shared memory
// per block (bytes), granted to the kernel; LaunchAttention takes it back, so a call queries no
// device attribute.
int PrepareAttention();
void LaunchAttention(const AttentionArgs& args, int max_shared, cudaStream_t stream);
// The GEMM attention's per-chunk steps (see gemm_attention.cc and attention_softmax.cu).
enum class ProbsType { kFloat32, kFloat16, kBfloat16 };
void LaunchOnlineSoftmaxChunk(const float* scores, void* probs, ProbsType probs_type, int64_t ld, int64_t entries, int64_t rows,
                              int keys, const uint8_t* mask, int64_t mask_entry_stride, float* m, float* l, float* corr, bool first,
                              bool normalize, cudaStream_t stream);
void LaunchRescaleRows(float* out, int64_t entries, int64_t rows, int64_t entry_stride, int64_t row_stride, int64_t cols,
                       const float* factor, bool divide, cudaStream_t stream);
// Flash attention on tensor cores (flash_attention.cu): bf16 / fp16 operands rounded from the
// float32 inputs in shared memory, float32 accumulation and output. Supports says whether a
// tensor-core shape holds widths (dqk, dv) within the current device's shared memory (else the
// caller keeps LaunchAttention, the exact float32 kernel). A long key range with few query tiles
// is split across blocks; the split's workspace (floats) comes from the caller, sized by
// WorkspaceFloats with the same p and force_splits (0: the plan's own choice).
bool FlashAttentionSupports(int64_t dqk, int64_t dv);
// The launch parameters of an AttentionOp (strided q, k, v views; contiguous out), without its key
// lengths or mask, which the caller uploads and sets (int32 lengths, uint8 mask, device memory).
flash::Params FlashAttentionParams(const AttentionOp& op);
size_t FlashAttentionWorkspaceFloats(const flash::Params& p, int force_splits);
void LaunchFlashAttention(flash::Params p, DType dtype, float* workspace, size_t workspace_floats, int force_splits, cudaStream_t stream);
// The attention weights themselves, [batch, heads, nq, nk], when a caller asks for them.
void LaunchAttentionProbs(const AttentionArgs& args, cudaStream_t stream);

}  // namespace perceiver::cuda
