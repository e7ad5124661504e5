// What every backend shares: names and labels of the typed ops.
#include "backend/backend.h"

#include <cmath>
#include <type_traits>

#include "core/engine_error.h"

namespace perceiver {

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kBfloat16:
      return "bfloat16";
    case DType::kFloat16:
      return "float16";
  }
  return "?";
}

void ThrowNonFiniteWeight(const HostWeight& weight, int64_t index) {
  const float v = weight.data[index];
  ThrowInvalidArgument("weight \"" + weight.name + "\"", "finite values", std::string(std::isnan(v) ? "NaN" : "Inf") + " at flat index " + std::to_string(index));
}

void CheckFinite(const HostWeight& weight) {
  const int64_t n = weight.rows * weight.cols;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(weight.data[i])) ThrowNonFiniteWeight(weight, i);
  }
}

CopyOp ContiguousCopy(float* dst, const float* src, size_t floats) {
  CopyOp op;
  op.dst = dst;
  op.src = src;
  op.rank = 1;
  op.shape[0] = static_cast<int64_t>(floats);
  op.dst_strides[0] = 1;
  op.src_strides[0] = 1;
  return op;
}

std::string OpLabel(const Op& op) {
  auto n = [](int64_t v) { return std::to_string(v); };
  return std::visit(
      [&](const auto& o) -> std::string {
        using T = std::decay_t<decltype(o)>;
        if constexpr (std::is_same_v<T, LinearOp>) {
          std::string s = "linear " + n(o.rows) + "x" + n(o.weight->cols()) + "->" + n(o.weight->rows());
          if (o.weight->dtype() != DType::kFloat32) s += std::string(" ") + DTypeName(o.weight->dtype());
          if (o.gelu) s += " +gelu";
          if (o.residual) s += " +residual";
          return s;
        } else if constexpr (std::is_same_v<T, LayerNormOp>) {
          return o.residual ? "layer_norm +residual" : "layer_norm";
        } else if constexpr (std::is_same_v<T, AttentionOp>) {
          return "attention q" + n(o.nq) + " k" + n(o.nk) + " h" + n(o.heads) + (o.probs ? " +probs" : "");
        } else if constexpr (std::is_same_v<T, EmbeddingOp>) {
          return "embedding";
        } else if constexpr (std::is_same_v<T, CopyOp>) {
          return o.rank == 1 ? "copy" : "strided_copy";
        } else if constexpr (std::is_same_v<T, AddRowsOp>) {
          return "add_rows";
        } else if constexpr (std::is_same_v<T, GatherRowsOp>) {
          return "gather_rows";
        } else if constexpr (std::is_same_v<T, Conv2dOp>) {
          return "conv2d " + n(o.kh) + "x" + n(o.kw);
        } else if constexpr (std::is_same_v<T, ChannelAffineOp>) {
          return "channel_affine";
        } else if constexpr (std::is_same_v<T, MaxPoolOp>) {
          return "max_pool";
        } else if constexpr (std::is_same_v<T, MeanRowsOp>) {
          return "mean_rows";
        } else if constexpr (std::is_same_v<T, FourierFeaturesOp>) {
          return "fourier_features " + n(o.bands) + " bands";
        } else {
          static_assert(std::is_same_v<T, ScaleOp>, "every op has a label");
          return "scale";
        }
      },
      op);
}

}  // namespace perceiver
