// The CPU kernels, one per file. They are the CPU backend's implementation and, later, the
// reference each GPU kernel is validated against.
#pragma once

#include <cstdint>

#include "backend/backend.h"

namespace perceiver::cpu {

void Linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias, int64_t out, float* y);
void LayerNorm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps, float* y);
void Gelu(float* x, int64_t n);
void AddInPlace(float* y, const float* x, int64_t n);
void Attention(const AttentionArgs& args);
void EmbeddingLookup(const int32_t* ids, int64_t batch, int64_t seq, const float* table, int64_t vocab,
                     const float* positions, int64_t dim, float* out);

}  // namespace perceiver::cpu

namespace perceiver::cpu {

void StridedCopy(float* dst, const int64_t* dst_strides, const float* src, const int64_t* src_strides,
                 const int64_t* shape, int rank);
void AddRowsBroadcast(float* y, const float* x, int64_t rows, int64_t cols, int64_t period);
void GatherRows(float* dst, const float* src, const int64_t* indices, int64_t count, int64_t batch, int64_t src_rows,
                int64_t cols);
void Conv2d(const float* x, int64_t batch, int64_t in_c, int64_t h, int64_t w, const float* weight, const float* bias,
            int64_t out_c, int64_t kh, int64_t kw, int64_t stride, int64_t pad_top, int64_t pad_left, int64_t out_h,
            int64_t out_w, float* y);
void ChannelAffine(float* y, int64_t rows, int64_t cols, const float* scale, const float* shift, bool relu);
void MaxPool2d(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, int64_t kernel, int64_t stride,
               int64_t out_h, int64_t out_w, float* y);
void MeanRows(const float* x, int64_t batch, int64_t n, int64_t cols, float* y);
void Scale(float* x, int64_t n, float alpha);

}  // namespace perceiver::cpu
