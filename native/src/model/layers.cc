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

std::shared_ptr<BackendBuffer> SharedQueryCache::Find(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(key);
  return it == entries_.end() ? nullptr : it->second;
}

std::shared_ptr<BackendBuffer> SharedQueryCache::Insert(const std::string& key, std::shared_ptr<BackendBuffer> value) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, inserted] = entries_.emplace(key, std::move(value));
  return it->second;  // another call may have got there first: both hold the same values
}

void RunLinear(Backend& be, const LinearWeights& w, const float* x, int64_t rows, float* y, bool gelu, const float* residual,
               int64_t residual_period) {
  LinearOp op;
  op.x = x;
  op.rows = rows;
  op.ldx = w.in;
  op.weight = w.weight.get();
  op.bias = w.bias.get();
  op.gelu = gelu;
  op.residual = residual;
  op.ld_residual = w.out;
  op.residual_period = residual_period;
  op.y = y;
  op.ldy = w.out;
  be.Run(op);
}

BackendTensor ApplyLinear(Backend& be, const LinearWeights& w, const BackendTensor& x) {
  std::vector<int64_t> shape = x.shape;
  const int64_t rows = x.size() / w.in;
  shape.back() = w.out;
  BackendTensor y = AllocateTensor(be, shape);
  RunLinear(be, w, x.data(), rows, y.data());
  return y;
}

void RunLayerNorm(Backend& be, const LayerNormWeights& w, float eps, const float* x, int64_t rows, float* y) {
  LayerNormOp op;
  op.x = x;
  op.rows = rows;
  op.dim = w.dim;
  op.ldx = w.dim;
  op.gamma = w.gamma.get();
  op.beta = w.beta.get();
  op.eps = eps;
  op.y = y;
  op.ldy = w.dim;
  be.Run(op);
}

void RunCopy(Backend& be, float* dst, const int64_t* dst_strides, const float* src, const int64_t* src_strides,
             const int64_t* shape, int rank) {
  CopyOp op;
  op.dst = dst;
  op.src = src;
  op.rank = rank;
  for (int d = 0; d < rank; ++d) {
    op.shape[d] = shape[d];
    op.dst_strides[d] = dst_strides[d];
    op.src_strides[d] = src_strides[d];
  }
  be.Run(op);
}

void RunContiguousCopy(Backend& be, float* dst, const float* src, int64_t floats) {
  be.Run(ContiguousCopy(dst, src, static_cast<size_t>(floats)));
}

void CopyIntoColumns(Backend& backend, const float* src, int64_t src_batch_stride, int64_t batch, int64_t rows,
                     int64_t cols, float* dst, int64_t dst_cols, int64_t col0) {
  const int64_t shape[3] = {batch, rows, cols};
  const int64_t src_strides[3] = {src_batch_stride, cols, 1};
  const int64_t dst_strides[3] = {rows * dst_cols, dst_cols, 1};
  RunCopy(backend, dst + col0, dst_strides, src, src_strides, shape, 3);
}

namespace {

// Query projection of shared queries: LayerNorm + projection of [nq, q_dim] once.
std::shared_ptr<BackendBuffer> ProjectSharedQueries(Backend& be, const PerceiverLayerSpec& L, float eps, const LayerQueries& q) {
  if (!q.cache_key.empty()) {
    if (auto hit = L.shared_queries->Find(q.cache_key)) return hit;
  }
  const int64_t nq = q.shared_rows;
  BackendTensor normed = AllocateTensor(be, {nq, L.q_dim});
  RunLayerNorm(be, L.layernorm1, eps, q.shared, nq, normed.data());
  std::shared_ptr<BackendBuffer> projected = be.Allocate(static_cast<size_t>(nq * L.qk_channels));
  RunLinear(be, L.query, normed.data(), nq, projected->data());
  if (q.cache_key.empty()) return projected;
  return L.shared_queries->Insert(q.cache_key, projected);
}

// Single-head cross-attention from batch-independent queries, folded (exact algebra):
//   softmax(s q (LN(x) W_k^T + b_k)^T) (LN(x) W_v^T + b_v)
//     = softmax((s q W_k) LN(x)^T) LN(x) W_v^T + b_v
// since q . b_k is the same for every key of a row (softmax ignores it) and each row of the
// probabilities sums to 1. The keys and values are then LN(x) itself: no projection of the
// (many) inputs at all, and one [nq, kv_dim] projection of the (few) queries, done once.
bool FoldCheaper(const PerceiverLayerSpec& L, int64_t nq, int64_t nk) {
  if (!L.key_transposed.present()) return false;
  const double qk = static_cast<double>(L.qk_channels), vc = static_cast<double>(L.v_channels), kv = static_cast<double>(L.kv_dim);
  const double plain = nk * kv * (qk + vc) + static_cast<double>(nq) * nk * (qk + vc);
  const double folded = static_cast<double>(nq) * nk * 2 * kv + nq * kv * vc;
  return folded < plain;
}

std::shared_ptr<BackendBuffer> FoldedQueries(Backend& be, const PerceiverLayerSpec& L, float eps, const LayerQueries& q, float scale) {
  const std::string key = q.cache_key.empty() ? "" : q.cache_key + "|folded";
  if (!key.empty()) {
    if (auto hit = L.shared_queries->Find(key)) return hit;
  }
  std::shared_ptr<BackendBuffer> projected = ProjectSharedQueries(be, L, eps, q);
  std::shared_ptr<BackendBuffer> folded = be.Allocate(static_cast<size_t>(q.shared_rows * L.kv_dim));
  RunLinear(be, L.key_transposed, projected->data(), q.shared_rows, folded->data());
  ScaleOp scaled;
  scaled.x = folded->data();
  scaled.n = q.shared_rows * L.kv_dim;
  scaled.alpha = scale;
  be.Run(scaled);
  if (key.empty()) return folded;
  return L.shared_queries->Insert(key, folded);
}

}  // namespace

BackendTensor RunPerceiverLayer(Backend& be, const PerceiverLayerSpec& L, float eps, int64_t batch, const LayerQueries& queries,
                                const BackendTensor* inputs, const KeyPadding& padding, std::vector<BackendTensor>* attentions) {
  const bool shared = queries.per_item == nullptr;
  const int64_t nq = shared ? queries.shared_rows : queries.per_item->shape[1];
  const int64_t nk = L.is_cross_attention ? inputs->shape[1] : nq;
  const int64_t rows_q = batch * nq, rows_k = batch * nk;
  const int64_t qk = L.qk_channels, vc = L.v_channels;

  AttentionOp att;
  att.batch = batch;
  att.heads = L.num_heads;
  att.nq = nq;
  att.nk = nk;
  att.dqk = qk / L.num_heads;
  att.dv = vc / L.num_heads;
  att.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(att.dqk)));

  // Projections, fused where they read the same input; q, k and v are views of their columns.
  std::shared_ptr<BackendBuffer> q_shared;
  BackendTensor q_proj, kv_proj;
  const bool folded = L.is_cross_attention && shared && L.num_heads == 1 && FoldCheaper(L, nq, nk);
  if (folded) {
    kv_proj = AllocateTensor(be, {batch, nk, L.kv_dim});  // LN(x): the keys and the values
    RunLayerNorm(be, L.layernorm2, eps, inputs->data(), rows_k, kv_proj.data());
    q_shared = FoldedQueries(be, L, eps, queries, att.scale);
    att.dqk = att.dv = L.kv_dim;
    att.scale = 1.0f;
    att.q = RowsView{q_shared->data(), L.kv_dim, 0};
    att.k = att.v = RowsView{kv_proj.data(), L.kv_dim, nk * L.kv_dim};
  } else if (L.is_cross_attention) {
    BackendTensor normed_kv = AllocateTensor(be, {batch, nk, L.kv_dim});
    RunLayerNorm(be, L.layernorm2, eps, inputs->data(), rows_k, normed_kv.data());
    kv_proj = AllocateTensor(be, {batch, nk, qk + vc});
    RunLinear(be, L.kv, normed_kv.data(), rows_k, kv_proj.data());
    att.k = RowsView{kv_proj.data(), qk + vc, nk * (qk + vc)};
    att.v = RowsView{kv_proj.data() + qk, qk + vc, nk * (qk + vc)};
    if (shared) {
      q_shared = ProjectSharedQueries(be, L, eps, queries);
      att.q = RowsView{q_shared->data(), qk, 0};
    } else {
      BackendTensor normed_q = AllocateTensor(be, {batch, nq, L.q_dim});
      RunLayerNorm(be, L.layernorm1, eps, queries.per_item->data(), rows_q, normed_q.data());
      q_proj = AllocateTensor(be, {batch, nq, qk});
      RunLinear(be, L.query, normed_q.data(), rows_q, q_proj.data());
      att.q = RowsView{q_proj.data(), qk, nq * qk};
    }
  } else {
    BackendTensor normed = AllocateTensor(be, {batch, nq, L.q_dim});
    RunLayerNorm(be, L.layernorm1, eps, queries.per_item->data(), rows_q, normed.data());
    const int64_t width = 2 * qk + vc;
    kv_proj = AllocateTensor(be, {batch, nq, width});
    RunLinear(be, L.qkv, normed.data(), rows_q, kv_proj.data());
    att.q = RowsView{kv_proj.data(), width, nq * width};
    att.k = RowsView{kv_proj.data() + qk, width, nq * width};
    att.v = RowsView{kv_proj.data() + 2 * qk, width, nq * width};
  }
  if (L.is_cross_attention) {
    att.key_mask = padding.mask;
    att.key_lengths = padding.lengths;
  }
  BackendTensor context = AllocateTensor(be, {batch, nq, folded ? L.kv_dim : vc});
  att.out = context.data();
  BackendTensor probs;
  if (attentions != nullptr) {
    probs = AllocateTensor(be, {batch, L.num_heads, nq, nk});
    att.probs = probs.data();
  }
  be.Run(att);
  if (attentions != nullptr) attentions->push_back(probs);
  q_shared.reset();
  q_proj = {};
  kv_proj = {};
  if (folded) context = ApplyLinear(be, L.value, context);  // (P LN(x)) W_v^T + b_v

  // Output projection (back to the query width) with the query residual fused.
  BackendTensor attended = AllocateTensor(be, {batch, nq, L.q_dim});
  const float* residual = nullptr;
  int64_t period = 0;
  if (L.use_query_residual) {
    residual = shared ? queries.shared : queries.per_item->data();
    period = shared ? nq : 0;
  }
  RunLinear(be, L.output, context.data(), rows_q, attended.data(), false, residual, period);
  context = {};

  // MLP block: hidden = attended + dense2(gelu(dense1(layernorm(attended)))), GELU and the
  // residual fused into the products; the result overwrites attended.
  BackendTensor normed = AllocateTensor(be, {batch, nq, L.q_dim});
  RunLayerNorm(be, L.layernorm, eps, attended.data(), rows_q, normed.data());
  BackendTensor widened = AllocateTensor(be, {batch, nq, L.mlp_dense1.out});
  RunLinear(be, L.mlp_dense1, normed.data(), rows_q, widened.data(), /*gelu=*/true);
  normed = {};
  RunLinear(be, L.mlp_dense2, widened.data(), rows_q, attended.data(), false, attended.data());
  return attended;
}

}  // namespace perceiver
