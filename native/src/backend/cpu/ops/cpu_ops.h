// The CPU kernels, one op per file, and the CPU backend's weight: the CPU backend's
// implementation of backend.h's ops and the reference each GPU kernel is validated against.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/kernels/gemm.h"

namespace perceiver::cpu {

// 64-byte-aligned float storage owned by the engine (weights, activations).
struct AlignedDelete {
  void operator()(float* p) const;
};
using AlignedFloats = std::unique_ptr<float[], AlignedDelete>;
// Throws an out-of-memory EngineError when the allocation fails.
AlignedFloats AllocateFloats(size_t floats);

// A weight the CPU backend owns: float32 values (kValues), or a matrix packed once into the
// product kernels' panel layout (kMatrix), in float32 or, in a bfloat16 model, in bf16 (the
// products then round their activation input to bf16 too: backend.h's RoundsProductInputs).
class CpuWeight final : public Weight {
 public:
  CpuWeight(const HostWeight& host, WeightUse use, Precision precision);
  DType dtype() const override { return dtype_; }
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  WeightUse use() const override { return use_; }
  const float* values() const override { return use_ == WeightUse::kValues ? values_.get() : nullptr; }
  const PackedMatrix& packed() const { return *packed_; }

 private:
  DType dtype_;
  int64_t rows_, cols_;
  WeightUse use_;
  AlignedFloats values_;
  std::unique_ptr<PackedMatrix> packed_;
};

inline const CpuWeight& Cpu(const Weight* w) { return static_cast<const CpuWeight&>(w->resolved()); }

void Linear(const LinearOp& op);
void LayerNorm(const LayerNormOp& op);
void Attention(const AttentionOp& op);
void Embedding(const EmbeddingOp& op);
void Copy(const CopyOp& op);
void AddRows(const AddRowsOp& op);
void GatherRows(const GatherRowsOp& op);
void Conv2d(const Conv2dOp& op);
void ChannelAffine(const ChannelAffineOp& op);
void MaxPool(const MaxPoolOp& op);
void MeanRows(const MeanRowsOp& op);
void Scale(const ScaleOp& op);

}  // namespace perceiver::cpu
