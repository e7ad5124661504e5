// Weights of the Perceiver's building blocks, loaded into the backend, and the one op they all
// share: transformers' PerceiverLayer.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace perceiver {

struct LinearWeights {
  WeightRef weight;  // kMatrix [out, in]
  WeightRef bias;    // kValues [1, out] or null
  int64_t in = 0, out = 0;
  bool present() const { return weight != nullptr; }
};

struct LayerNormWeights {
  WeightRef gamma, beta;  // kValues [1, dim]
  int64_t dim = 0;
};

// Batch-independent work of one layer, done once and kept: LayerNorm + query projection of
// queries that are the same for every batch item (the encoder's latents, a decoder's learned
// queries), keyed by what the queries are.
class SharedQueryCache {
 public:
  std::shared_ptr<BackendBuffer> Find(const std::string& key);
  std::shared_ptr<BackendBuffer> Insert(const std::string& key, std::shared_ptr<BackendBuffer> value);

 private:
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<BackendBuffer>> entries_;
};

// transformers' PerceiverLayer: (cross- or self-) attention with its output projection and
// optional query residual, then LayerNorm + MLP with a residual. Projections that read the same
// input are fused at load (weights concatenated by rows): self-attention's query, key and value
// are one [2 qk + v, q_dim] product (qkv); cross-attention's key and value one [qk + v, kv_dim]
// product (kv) beside the query projection.
struct PerceiverLayerSpec {
  bool is_cross_attention = false;
  int64_t num_heads = 1, qk_channels = 0, v_channels = 0, q_dim = 0, kv_dim = 0, widening_factor = 1;
  bool use_query_residual = true;
  LayerNormWeights layernorm1;  // on the queries
  LayerNormWeights layernorm2;  // on the keys/values (cross-attention only)
  LinearWeights query;          // cross-attention only
  LinearWeights kv;             // cross-attention: [key; value]
  LinearWeights qkv;            // self-attention: [query; key; value]
  // Single-head cross-attention only, for the folded form (see RunPerceiverLayer): W_k^T
  // [kv_dim, qk] (no bias) and the value projection on its own.
  LinearWeights key_transposed, value;
  LinearWeights output;
  LayerNormWeights layernorm;  // before the MLP
  LinearWeights mlp_dense1, mlp_dense2;
  std::shared_ptr<SharedQueryCache> shared_queries = std::make_shared<SharedQueryCache>();
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

// y[rows, out] = epilogue(x[rows, in] @ w^T + b) with contiguous rows (see LinearOp).
void RunLinear(Backend& backend, const LinearWeights& w, const float* x, int64_t rows, float* y, bool gelu = false,
               const float* residual = nullptr, int64_t residual_period = 0);
// y = x @ w^T + b over the last dimension of x ([..., in] -> [..., out]).
BackendTensor ApplyLinear(Backend& backend, const LinearWeights& w, const BackendTensor& x);
void RunLayerNorm(Backend& backend, const LayerNormWeights& w, float eps, const float* x, int64_t rows, float* y);
// The N-D strided copy (CopyOp) from arrays of `rank` entries.
void RunCopy(Backend& backend, float* dst, const int64_t* dst_strides, const float* src, const int64_t* src_strides,
             const int64_t* shape, int rank);
void RunContiguousCopy(Backend& backend, float* dst, const float* src, int64_t floats);

// Copies x [batch, rows, cols] into columns [col0, col0 + cols) of dst [batch, rows, dst_cols].
// src_batch_stride 0 broadcasts one [rows, cols] block over the batch.
void CopyIntoColumns(Backend& backend, const float* src, int64_t src_batch_stride, int64_t batch, int64_t rows,
                     int64_t cols, float* dst, int64_t dst_cols, int64_t col0);

// Key padding of a cross-attention's inputs (host memory): per-item lengths when every row of
// the mask is a run of ones then zeros, else the mask itself; both null when nothing is padded.
struct KeyPadding {
  const uint8_t* mask = nullptr;        // [batch, nk]
  const int64_t* lengths = nullptr;     // [batch]
};

// The queries a layer runs on: per item ([batch, nq, q_dim]), or one block shared by every item
// ([nq, q_dim], batch-independent), whose LayerNorm and query projection are then computed once
// (and kept across calls under cache_key when it is not empty: the block never changes).
struct LayerQueries {
  const BackendTensor* per_item = nullptr;
  const float* shared = nullptr;
  int64_t shared_rows = 0;
  std::string cache_key;
};

// Runs one PerceiverLayer for `batch` items and returns the new hidden state [batch, nq, q_dim].
// For cross-attention, inputs is [batch, nk, kv_dim].
BackendTensor RunPerceiverLayer(Backend& backend, const PerceiverLayerSpec& layer, float eps, int64_t batch,
                                const LayerQueries& queries, const BackendTensor* inputs, const KeyPadding& padding,
                                std::vector<BackendTensor>* attentions);

}  // namespace perceiver
