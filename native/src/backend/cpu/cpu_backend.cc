// The CPU backend: host memory, OpenBLAS for matrix products, the thread pool for the rest.
#include <cblas.h>

#include <cstring>
#include <mutex>
#include <new>

#include "backend/backend.h"
#include "backend/cpu/ops/cpu_ops.h"
#include "core/engine_error.h"

namespace perceiver {

namespace {

class HostBuffer final : public BackendBuffer {
 public:
  // Uninitialised on purpose: every buffer is fully written by the op that fills it, and zeroing
  // would cost one more pass over memory per activation.
  explicit HostBuffer(size_t floats) : size_(floats) {
    data_.reset(new (std::nothrow) float[floats > 0 ? floats : 1]);
    if (!data_) {
      throw EngineError(ErrorCode::kOutOfMemory,
                        "out of host memory allocating " + std::to_string(floats * sizeof(float)) + " bytes");
    }
  }
  float* data() override { return data_.get(); }
  size_t size() const override { return size_; }

 private:
  std::unique_ptr<float[]> data_;
  size_t size_;
};

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  std::unique_ptr<BackendBuffer> Allocate(size_t floats) override { return std::make_unique<HostBuffer>(floats); }
  const float* Weight(const float* host, size_t) override { return host; }
  void CopyToHost(float* dst, const float* src, size_t n) override { Copy(dst, src, n); }
  void CopyFromHost(float* dst, const float* src, size_t n) override { Copy(dst, src, n); }
  void Copy(float* dst, const float* src, size_t n) override {
    if (n) std::memcpy(dst, src, n * sizeof(float));
  }
  void Synchronize() override {}

  void Linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias, int64_t out,
              float* y) override {
    cpu::Linear(x, rows, in, w, bias, out, y);
  }
  void LayerNorm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps,
                 float* y) override {
    cpu::LayerNorm(x, rows, dim, gamma, beta, eps, y);
  }
  void Gelu(float* x, int64_t n) override { cpu::Gelu(x, n); }
  void AddInPlace(float* y, const float* x, int64_t n) override { cpu::AddInPlace(y, x, n); }
  void Broadcast(float* dst, const float* src, int64_t n, int64_t batch) override {
    for (int64_t b = 0; b < batch; ++b) Copy(dst + b * n, src, static_cast<size_t>(n));
  }
  void Attention(const AttentionArgs& args) override { cpu::Attention(args); }
  void EmbeddingLookup(const int32_t* ids, int64_t batch, int64_t seq, const float* table, int64_t vocab,
                       const float* positions, int64_t dim, float* out) override {
    cpu::EmbeddingLookup(ids, batch, seq, table, vocab, positions, dim, out);
  }
};

}  // namespace

void ConfigureCpuBlas() {
  // The engine threads every op itself (ops/linear.cc, ops/attention.cc); OpenBLAS's own threads
  // would only oversubscribe the cores and spin between calls.
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

std::unique_ptr<Backend> CreateCpuBackend() {
  ConfigureCpuBlas();
  return std::make_unique<CpuBackend>();
}

}  // namespace perceiver
