// See gemm_attention.h. Why not one fused kernel for every shape: the widths here range from 32
// to 1024 per head and the key counts from 256 to 182,528; cuBLAS already picks tuned
// tensor-core kernels for every such product, while a hand-written fused kernel reaches that
// speed only for the head widths it was tuned for. The fused kernel (kernels/attention.cu)
// remains, selected with PERCEIVER_CUDA_ATTENTION=fused, and both are checked against the CPU.
#include "backend/cuda/gemm_attention.h"

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

namespace {

constexpr int64_t kKeyChunk = 8192;  // keys per chunk when not every key fits at once

// Where one batched product finds its operands: the cuBLAS batch runs over `entries` (batch
// items or heads, whichever are more), the host loop over the other.
struct Layout {
  int64_t entries = 0, loops = 0;
  bool entries_are_batch = false;
};

}  // namespace

void GemmAttention(const AttentionArgs& a, const GemmAttentionContext& ctx) {
  if (a.batch == 0 || a.nq == 0 || a.heads == 0) return;
  if (a.nk == 0 || a.dv == 0) ThrowInvalidArgument("attention", "at least one key and one value channel", std::to_string(a.nk) + " keys, " + std::to_string(a.dv) + " value channels");
  const CublasLibrary& blas = Cublas();
  const bool half = ctx.precision == Precision::kFloat16 || ctx.precision == Precision::kBfloat16;
  const bool bf16 = ctx.precision == Precision::kBfloat16;
  const int io_type = half ? (bf16 ? kR16BF : kR16F) : kR32F;
  const int compute = ctx.precision == Precision::kTfloat32 ? kCompute32FFastTF32 : kCompute32F;
  const int64_t q_row = a.heads * a.dqk, v_row = a.heads * a.dv;
  if (q_row > INT32_MAX || v_row > INT32_MAX) ThrowInvalidArgument("attention rows", "rows within cuBLAS's int range", std::to_string(std::max(q_row, v_row)) + " values");

  // In half precision the operands are converted once per call (activations stay float32).
  std::unique_ptr<BackendBuffer> qh, kh, vh;
  const void* q = a.q;
  const void* k = a.k;
  const void* v = a.v;
  const size_t elem = half ? 2 : 4;
  if (half) {
    const int64_t nq_all = a.batch * a.nq * q_row, nk_all = a.batch * a.nk * q_row, nv_all = a.batch * a.nk * v_row;
    qh = ctx.allocate(static_cast<size_t>((nq_all + 1) / 2));
    kh = ctx.allocate(static_cast<size_t>((nk_all + 1) / 2));
    vh = ctx.allocate(static_cast<size_t>((nv_all + 1) / 2));
    LaunchConvert(a.q, nq_all, bf16, qh->data(), ctx.stream);
    LaunchConvert(a.k, nk_all, bf16, kh->data(), ctx.stream);
    LaunchConvert(a.v, nv_all, bf16, vh->data(), ctx.stream);
    q = qh->data();
    k = kh->data();
    v = vh->data();
  }
  auto at = [elem](const void* base, int64_t offset) { return static_cast<const char*>(base) + offset * static_cast<int64_t>(elem); };

  Layout layout;
  layout.entries_are_batch = a.batch >= a.heads;
  layout.entries = layout.entries_are_batch ? a.batch : a.heads;
  layout.loops = layout.entries_are_batch ? a.heads : a.batch;
  if (layout.entries > INT32_MAX) ThrowInvalidArgument("attention batch", "at most 2^31 - 1 batch entries", std::to_string(layout.entries));
  // Element strides between entries, and offsets of loop index i.
  const int64_t q_entry = layout.entries_are_batch ? a.nq * q_row : a.dqk;
  const int64_t k_entry = layout.entries_are_batch ? a.nk * q_row : a.dqk;
  const int64_t v_entry = layout.entries_are_batch ? a.nk * v_row : a.dv;
  const int64_t o_entry = layout.entries_are_batch ? a.nq * v_row : a.dv;
  auto q_loop = [&](int64_t i) { return layout.entries_are_batch ? i * a.dqk : i * a.nq * q_row; };
  auto k_loop = [&](int64_t i) { return layout.entries_are_batch ? i * a.dqk : i * a.nk * q_row; };
  auto v_loop = [&](int64_t i) { return layout.entries_are_batch ? i * a.dv : i * a.nk * v_row; };
  auto o_loop = [&](int64_t i) { return layout.entries_are_batch ? i * a.dv : i * a.nq * v_row; };
  const int64_t mask_entry = layout.entries_are_batch ? a.nk : 0;
  auto mask_loop = [&](int64_t i) { return layout.entries_are_batch ? 0 : i * a.nk; };

  // Chunk sizes within the score budget. Few keys (the decoders, self-attention): every key at
  // once, queries chunked, so no rescaling pass is needed. Many keys (the encoders'
  // cross-attention over pixels): every query at once where a chunk of at least 1,024 keys then
  // fits, so keys and values are read once; otherwise 8,192 keys and chunked queries.
  const int64_t bytes_per_score = layout.entries * (4 + (half ? 2 : 0));
  const int64_t budget = static_cast<int64_t>(ctx.score_budget_bytes);
  int64_t kc = a.nk;
  if (a.nk > kKeyChunk) {
    kc = std::min(a.nk, budget / (bytes_per_score * a.nq) / 64 * 64);
    if (kc < 1024) kc = kKeyChunk;
  }
  const bool single_chunk = kc == a.nk;
  int64_t qc = std::max<int64_t>(1, budget / (bytes_per_score * kc));
  if (qc < a.nq) qc = std::max<int64_t>(16, qc / 16 * 16);
  qc = std::min(qc, a.nq);
  if (kc > INT32_MAX || qc > INT32_MAX) ThrowInvalidArgument("attention chunk", "a chunk within cuBLAS's int range", std::to_string(std::max(kc, qc)));

  std::unique_ptr<BackendBuffer> scores = ctx.allocate(static_cast<size_t>(layout.entries * qc * kc));
  std::unique_ptr<BackendBuffer> probs_half;
  if (half) probs_half = ctx.allocate(static_cast<size_t>((layout.entries * qc * kc + 1) / 2));
  void* probs = half ? probs_half->data() : scores->data();  // float32 probabilities overwrite their scores
  const ProbsType probs_type = half ? (bf16 ? ProbsType::kBfloat16 : ProbsType::kFloat16) : ProbsType::kFloat32;
  std::unique_ptr<BackendBuffer> stats;
  if (!single_chunk) stats = ctx.allocate(static_cast<size_t>(3 * layout.entries * qc));
  float* m = stats ? stats->data() : nullptr;
  float* l = stats ? m + layout.entries * qc : nullptr;
  float* corr = stats ? l + layout.entries * qc : nullptr;

  const float scale = a.scale, one = 1.0f, zero = 0.0f;
  for (int64_t i = 0; i < layout.loops; ++i) {
    for (int64_t q0 = 0; q0 < a.nq; q0 += qc) {
      const int64_t qn = std::min(qc, a.nq - q0);
      const void* q_chunk = at(q, q_loop(i) + q0 * q_row);
      float* o_chunk = a.out + o_loop(i) + q0 * v_row;
      for (int64_t k0 = 0; k0 < a.nk; k0 += kc) {
        const int64_t kn = std::min(kc, a.nk - k0);
        const bool first = k0 == 0;
        // The chunk's scores are packed by its own query count: entry e, query r at (e * qn + r) * kc.
        // scores^T (kn x qn, column-major) = K_chunk (kn x dqk) . Q_chunk^T, scaled.
        CUBLAS_CHECK(blas.GemmStridedBatchedEx(
            ctx.blas, kOpT, kOpN, static_cast<int>(kn), static_cast<int>(qn), static_cast<int>(a.dqk), &scale, at(k, k_loop(i) + k0 * q_row),
            io_type, static_cast<int>(q_row), k_entry, q_chunk, io_type, static_cast<int>(q_row), q_entry, &zero, scores->data(), kR32F,
            static_cast<int>(kc), qn * kc, static_cast<int>(layout.entries), compute, kGemmDefault));
        const uint8_t* mask = a.key_mask ? a.key_mask + mask_loop(i) + k0 : nullptr;
        LaunchOnlineSoftmaxChunk(scores->data(), probs, probs_type, kc, layout.entries, qn, static_cast<int>(kn), mask, mask_entry, m, l,
                                 corr, first, single_chunk, ctx.stream);
        // Earlier chunks' accumulation is rescaled to the new row maxima before this one adds.
        if (!first) LaunchRescaleRows(o_chunk, layout.entries, qn, o_entry, v_row, a.dv, corr, false, ctx.stream);
        // out^T (dv x qn) (+)= V_chunk^T (dv x kn) . P^T (kn x qn).
        CUBLAS_CHECK(blas.GemmStridedBatchedEx(
            ctx.blas, kOpN, kOpN, static_cast<int>(a.dv), static_cast<int>(qn), static_cast<int>(kn), &one, at(v, v_loop(i) + k0 * v_row),
            io_type, static_cast<int>(v_row), v_entry, probs, io_type, static_cast<int>(kc), qn * kc, first ? &zero : &one, o_chunk, kR32F,
            static_cast<int>(v_row), o_entry, static_cast<int>(layout.entries), compute, kGemmDefault));
      }
      if (!single_chunk) LaunchRescaleRows(o_chunk, layout.entries, qn, o_entry, v_row, a.dv, l, true, ctx.stream);
    }
  }
}

}  // namespace perceiver::cuda
