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
