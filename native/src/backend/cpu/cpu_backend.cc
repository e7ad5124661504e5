// The CPU backend: host memory the engine owns, products on weights packed at load with fused
// epilogues (kernels/gemm.h), the thread pool for the rest.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <new>
#include <type_traits>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/ops/cpu_ops.h"
#include "core/engine_error.h"
#include "core/fourier_features.h"
#include "core/thread_pool.h"

namespace perceiver {

namespace cpu {

void AlignedDelete::operator()(float* p) const { std::free(p); }

AlignedFloats AllocateFloats(size_t floats) {
  const size_t bytes = ((std::max<size_t>(1, floats) * sizeof(float)) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) {
    throw EngineError(ErrorCode::kOutOfMemory, "out of host memory allocating " + std::to_string(bytes) + " bytes");
  }
  return AlignedFloats(static_cast<float*>(p));
}

namespace {

// Copies (dst non-null) and checks n values in one pass; returns the lowest index of a
// non-finite value, or -1. On the calling thread only: loading runs on one of libuv's threads and
// leaves the other cores to the event loop and to running models (the pass is memory-bound).
int64_t CopyChecked(const float* src, float* dst, int64_t n) {
  constexpr int64_t kBlock = 1 << 14;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    float acc = 0.0f;  // x * 0 is NaN exactly when x is not finite
    for (int64_t i = i0; i < i1; ++i) {
      const float v = src[i];
      acc += v * 0.0f;
      if (dst != nullptr) dst[i] = v;
    }
    if (acc != 0.0f) {  // also true for NaN
      for (int64_t i = i0; i < i1; ++i) {
        if (!std::isfinite(src[i])) return i;
      }
    }
  }
  return -1;
}

}  // namespace

// The copy (or packing) into engine-owned memory is also where non-finite values are caught,
// naming the weight. After this the caller's memory is never read again.
CpuWeight::CpuWeight(const HostWeight& host, WeightUse use, Precision precision)
    : dtype_(use == WeightUse::kMatrix && precision == Precision::kBfloat16 ? DType::kBfloat16 : DType::kFloat32),
      rows_(host.rows),
      cols_(host.cols),
      use_(use) {
  const int64_t n = rows_ * cols_;
  if (use == WeightUse::kValues) values_ = AllocateFloats(static_cast<size_t>(n));
  const int64_t bad = CopyChecked(host.data, values_.get(), n);
  if (bad >= 0) ThrowNonFiniteWeight(host, bad);
  if (use == WeightUse::kMatrix) {
    packed_ = PackWeights(host.data, rows_, cols_, cols_, dtype_ == DType::kBfloat16 ? PackedType::kBfloat16 : PackedType::kFloat32);
  }
}

}  // namespace cpu

namespace {

// Activation memory reused across ops and calls: freed blocks wait in per-size lists, so the
// steady state does no malloc/free (and no fresh pages to fault in) per op; the model's working
// set is allocated once and recycled. Bounded: blocks beyond kMaxCachedBytes are freed.
class HostPool {
 public:
  cpu::AlignedFloats Take(size_t floats) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(floats);
      if (it != free_.end() && !it->second.empty()) {
        cpu::AlignedFloats p = std::move(it->second.back());
        it->second.pop_back();
        cached_bytes_ -= floats * sizeof(float);
        return p;
      }
    }
    return cpu::AllocateFloats(floats);
  }
  // Frees every cached buffer and hands the freed heap back to the system (glibc keeps large
  // freed blocks once its mmap threshold has grown past them): the arena (arena_backend.cc) serves
  // a planned shape from its own block, so what the planning calls left here is only memory.
  void Clear() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      free_.clear();
      cached_bytes_ = 0;
    }
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
  }
  void Give(cpu::AlignedFloats p, size_t floats) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_bytes_ + floats * sizeof(float) > kMaxCachedBytes) return;  // p is freed
    cached_bytes_ += floats * sizeof(float);
    free_[floats].push_back(std::move(p));
  }

 private:
  static constexpr size_t kMaxCachedBytes = size_t{1} << 30;
  std::mutex mutex_;
  size_t cached_bytes_ = 0;
  std::map<size_t, std::vector<cpu::AlignedFloats>> free_;
};

class HostBuffer final : public BackendBuffer {
 public:
  // Uninitialised on purpose: every buffer is fully written by the op that fills it.
  HostBuffer(std::shared_ptr<HostPool> pool, size_t floats) : pool_(std::move(pool)), size_(floats), data_(pool_->Take(floats)) {}
  ~HostBuffer() override { pool_->Give(std::move(data_), size_); }
  float* data() override { return data_.get(); }
  size_t size() const override { return size_; }

 private:
  std::shared_ptr<HostPool> pool_;
  size_t size_;
  cpu::AlignedFloats data_;
};

// Fourier features of a grid: the model's own definition (core/fourier_features.h), the
// reference the CUDA kernel (kernels/fourier_features.cu) is checked against.
void FourierGrid(const FourierFeaturesOp& op) {
  FourierSpec spec;
  spec.num_bands = op.bands;
  spec.max_resolution.assign(op.max_resolution, op.max_resolution + op.dims);
  spec.concat_pos = op.concat_pos;
  spec.sine_only = op.sine_only;
  const std::vector<int64_t> dims(op.index_dims, op.index_dims + op.dims);
  const std::vector<float> positions = GridPositions(dims);
  FourierFeatures(positions.data(), static_cast<int64_t>(positions.size()) / std::max(1, op.dims), spec, op.out);
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(Precision precision) : precision_(precision) {}
  std::string name() const override { return "cpu"; }
  Precision precision() const override { return precision_; }
  bool serializes_calls() const override { return false; }
  std::unique_ptr<BackendBuffer> Allocate(size_t floats) override { return std::make_unique<HostBuffer>(pool_, floats); }
  void ReleaseCachedMemory() override { pool_->Clear(); }
  WeightRef LoadWeight(const HostWeight& host, WeightUse use) override {
    return std::make_shared<cpu::CpuWeight>(host, use, precision_);
  }
  void CopyToHost(float* dst, const float* src, size_t n) override { cpu::Copy(ContiguousCopy(dst, src, n)); }
  void CopyFromHost(float* dst, const float* src, size_t n) override { cpu::Copy(ContiguousCopy(dst, src, n)); }
  void Synchronize() override {}

  void Run(const Op& op) override {
    std::visit(
        [&](const auto& o) {
          using T = std::decay_t<decltype(o)>;
          if constexpr (std::is_same_v<T, LinearOp>) cpu::Linear(o);
          else if constexpr (std::is_same_v<T, LayerNormOp>) cpu::LayerNorm(o);
          else if constexpr (std::is_same_v<T, AttentionOp>) cpu::Attention(o);
          else if constexpr (std::is_same_v<T, EmbeddingOp>) cpu::Embedding(o);
          else if constexpr (std::is_same_v<T, CopyOp>) cpu::Copy(o);
          else if constexpr (std::is_same_v<T, AddRowsOp>) cpu::AddRows(o);
          else if constexpr (std::is_same_v<T, GatherRowsOp>) cpu::GatherRows(o);
          else if constexpr (std::is_same_v<T, Conv2dOp>) cpu::Conv2d(o);
          else if constexpr (std::is_same_v<T, ChannelAffineOp>) cpu::ChannelAffine(o);
          else if constexpr (std::is_same_v<T, MaxPoolOp>) cpu::MaxPool(o);
          else if constexpr (std::is_same_v<T, MeanRowsOp>) cpu::MeanRows(o);
          else if constexpr (std::is_same_v<T, ScaleOp>) cpu::Scale(o);
          else if constexpr (std::is_same_v<T, FourierFeaturesOp>) FourierGrid(o);
          else static_assert(!sizeof(T), "an op the CPU backend does not run");
        },
        op);
  }

 private:
  Precision precision_;
  std::shared_ptr<HostPool> pool_ = std::make_shared<HostPool>();
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(Precision precision) {
  if (precision != Precision::kFloat32 && precision != Precision::kBfloat16) {
    throw EngineError(ErrorCode::kBackendUnavailable, "dtype: the cpu backend computes in float32 or bfloat16");
  }
  return std::make_unique<CpuBackend>(precision);
}

}  // namespace perceiver
