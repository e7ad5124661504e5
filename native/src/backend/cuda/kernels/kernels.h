// Host launchers of the CUDA kernels, one op per .cu file, each beside its kernel: they size the
// grid, launch on the given stream and check the launch. Every kernel computes in float32; the
// CPU backend's op of the same name (backend/cpu/ops) is its reference (bench/gpu-check.sh and
// test/gpu/*.test.ts compare them on a GPU).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/backend.h"

namespace perceiver::cuda {

void LaunchLayerNorm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps, float* y,
                     cudaStream_t stream);
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
// float32 -> float16 / bfloat16 (dst holds 16-bit words).
void LaunchConvert(const float* src, int64_t n, bool bfloat16, void* dst, cudaStream_t stream);
// Memory-efficient attention (online softmax over blocks of keys; scores never materialised).
void LaunchAttention(const AttentionArgs& args, cudaStream_t stream);
// The GEMM attention's per-chunk steps (see gemm_attention.cc and attention_softmax.cu).
enum class ProbsType { kFloat32, kFloat16, kBfloat16 };
void LaunchOnlineSoftmaxChunk(const float* scores, void* probs, ProbsType probs_type, int64_t ld, int64_t entries, int64_t rows,
                              int keys, const uint8_t* mask, int64_t mask_entry_stride, float* m, float* l, float* corr, bool first,
                              bool normalize, cudaStream_t stream);
void LaunchRescaleRows(float* out, int64_t entries, int64_t rows, int64_t entry_stride, int64_t row_stride, int64_t cols,
                       const float* factor, bool divide, cudaStream_t stream);
// The attention weights themselves, [batch, heads, nq, nk], when a caller asks for them.
void LaunchAttentionProbs(const AttentionArgs& args, cudaStream_t stream);

}  // namespace perceiver::cuda
