// Weights of the Perceiver's building blocks, resolved to backend pointers, and the one op they
// all share: transformers' PerceiverLayer.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"

namespace perceiver {

struct LinearWeights {
  const float* weight = nullptr;  // [out, in]
  const float* bias = nullptr;    // [out] or null
  int64_t in = 0, out = 0;
  bool present() const { return weight != nullptr; }
};

struct LayerNormWeights {
  const float* gamma = nullptr;
  const float* beta = nullptr;
  int64_t dim = 0;
};

// transformers' PerceiverLayer: (cross- or self-) attention with its output projection and
// optional query residual, then LayerNorm + MLP with a residual.
struct PerceiverLayerSpec {
  bool is_cross_attention = false;
  int64_t num_heads = 1, qk_channels = 0, v_channels = 0, q_dim = 0, kv_dim = 0, widening_factor = 1;
  bool use_query_residual = true;
  LayerNormWeights layernorm1;  // on the queries
  LayerNormWeights layernorm2;  // on the keys/values (cross-attention only)
  LinearWeights query, key, value, output;
  LayerNormWeights layernorm;  // before the MLP
  LinearWeights mlp_dense1, mlp_dense2;
};

// Number of elements of a shape (or points of an index grid).
inline int64_t Product(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

// A float tensor in backend memory; the buffer is shared so cached tensors outlive their users.
struct BackendTensor {
  std::shared_ptr<BackendBuffer> buffer;
  std::vector<int64_t> shape;
  float* data() const { return buffer->data(); }
  int64_t size() const;
};

BackendTensor AllocateTensor(Backend& backend, std::vector<int64_t> shape);

// y = x @ w^T + b over the last dimension of x ([..., in] -> [..., out]).
BackendTensor ApplyLinear(Backend& backend, const LinearWeights& w, const BackendTensor& x);

// Copies x [batch, rows, cols] into columns [col0, col0 + cols) of dst [batch, rows, dst_cols].
// src_batch_stride 0 broadcasts one [rows, cols] block over the batch.
void CopyIntoColumns(Backend& backend, const float* src, int64_t src_batch_stride, int64_t batch, int64_t rows,
                     int64_t cols, float* dst, int64_t dst_cols, int64_t col0);

// Runs one PerceiverLayer on hidden [batch, nq, q_dim] in place. For cross-attention, inputs is
// [batch, nk, kv_dim] and key_mask (optional, host, [batch, nk]) masks padded inputs.
void RunPerceiverLayer(Backend& backend, const PerceiverLayerSpec& layer, float eps, BackendTensor& hidden,
                       const BackendTensor* inputs, const uint8_t* key_mask, std::vector<BackendTensor>* attentions);

}  // namespace perceiver
