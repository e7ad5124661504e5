#include "model/layers.h"

#include <cmath>

namespace perceiver {

int64_t BackendTensor::size() const { return Product(shape); }

BackendTensor AllocateTensor(Backend& backend, std::vector<int64_t> shape) {
  BackendTensor t;
  t.shape = std::move(shape);
  t.buffer = backend.Allocate(static_cast<size_t>(t.size()));
  return t;
}

BackendTensor ApplyLinear(Backend& backend, const LinearWeights& w, const BackendTensor& x) {
  std::vector<int64_t> shape = x.shape;
  const int64_t rows = x.size() / w.in;
  shape.back() = w.out;
  BackendTensor y = AllocateTensor(backend, shape);
  backend.Linear(x.data(), rows, w.in, w.weight, w.bias, w.out, y.data());
  return y;
}

void CopyIntoColumns(Backend& backend, const float* src, int64_t src_batch_stride, int64_t batch, int64_t rows,
                     int64_t cols, float* dst, int64_t dst_cols, int64_t col0) {
  const int64_t shape[3] = {batch, rows, cols};
  const int64_t src_strides[3] = {src_batch_stride, cols, 1};
  const int64_t dst_strides[3] = {rows * dst_cols, dst_cols, 1};
  backend.StridedCopy(dst + col0, dst_strides, src, src_strides, shape, 3);
}

void RunPerceiverLayer(Backend& be, const PerceiverLayerSpec& L, float eps, BackendTensor& hidden,
                       const BackendTensor* inputs, const uint8_t* key_mask, std::vector<BackendTensor>* attentions) {
  const int64_t batch = hidden.shape[0], nq = hidden.shape[1];
  const int64_t nk = L.is_cross_attention ? inputs->shape[1] : nq;
  const int64_t rows_q = batch * nq, rows_k = batch * nk;

  // Attention block.
  BackendTensor normed_q = AllocateTensor(be, {batch, nq, L.q_dim});
  be.LayerNorm(hidden.data(), rows_q, L.q_dim, L.layernorm1.gamma, L.layernorm1.beta, eps, normed_q.data());
  BackendTensor normed_kv = normed_q;
  if (L.is_cross_attention) {
    normed_kv = AllocateTensor(be, {batch, nk, L.kv_dim});
    be.LayerNorm(inputs->data(), rows_k, L.kv_dim, L.layernorm2.gamma, L.layernorm2.beta, eps, normed_kv.data());
  }
  BackendTensor q = ApplyLinear(be, L.query, normed_q);
  BackendTensor k = ApplyLinear(be, L.key, normed_kv);
  BackendTensor v = ApplyLinear(be, L.value, normed_kv);
  normed_q = {};
  normed_kv = {};

  AttentionArgs args;
  args.batch = batch;
  args.heads = L.num_heads;
  args.nq = nq;
  args.nk = nk;
  args.dqk = L.qk_channels / L.num_heads;
  args.dv = L.v_channels / L.num_heads;
  args.q = q.data();
  args.k = k.data();
  args.v = v.data();
  args.key_mask = L.is_cross_attention ? key_mask : nullptr;
  args.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(args.dqk)));
  BackendTensor context = AllocateTensor(be, {batch, nq, L.v_channels});
  args.out = context.data();
  BackendTensor probs;
  if (attentions != nullptr) {
    probs = AllocateTensor(be, {batch, L.num_heads, nq, nk});
    args.probs = probs.data();
  }
  be.Attention(args);
  if (attentions != nullptr) attentions->push_back(probs);
  q = {};
  k = {};
  v = {};

  // Output projection (back to the query width) and the query residual.
  BackendTensor attended = ApplyLinear(be, L.output, context);
  context = {};
  if (L.use_query_residual) be.AddInPlace(attended.data(), hidden.data(), rows_q * L.q_dim);

  // MLP block: hidden = attended + mlp(layernorm(attended)).
  BackendTensor normed = AllocateTensor(be, {batch, nq, L.q_dim});
  be.LayerNorm(attended.data(), rows_q, L.q_dim, L.layernorm.gamma, L.layernorm.beta, eps, normed.data());
  BackendTensor widened = ApplyLinear(be, L.mlp_dense1, normed);
  normed = {};
  be.Gelu(widened.data(), widened.size());
  be.Linear(widened.data(), rows_q, L.mlp_dense1.out, L.mlp_dense2.weight, L.mlp_dense2.bias, L.q_dim, hidden.data());
  be.AddInPlace(hidden.data(), attended.data(), rows_q * L.q_dim);
}

}  // namespace perceiver
