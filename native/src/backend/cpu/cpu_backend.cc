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
  void Attention(const AttentionArgs& args) override { cpu::Attention(args); }
  void EmbeddingLookup(const int32_t* ids, int64_t batch, int64_t seq, const float* table, int64_t vocab,
                       const float* positions, int64_t dim, float* out) override {
    cpu::EmbeddingLookup(ids, batch, seq, table, vocab, positions, dim, out);
  }
  void StridedCopy(float* dst, const int64_t* dst_strides, const float* src, const int64_t* src_strides,
                   const int64_t* shape, int rank) override {
    cpu::StridedCopy(dst, dst_strides, src, src_strides, shape, rank);
  }
  void AddRowsBroadcast(float* y, const float* x, int64_t rows, int64_t cols, int64_t period) override {
    cpu::AddRowsBroadcast(y, x, rows, cols, period);
  }
  void GatherRows(float* dst, const float* src, const int64_t* indices, int64_t count, int64_t batch,
                  int64_t src_rows, int64_t cols) override {
    cpu::GatherRows(dst, src, indices, count, batch, src_rows, cols);
  }
  void Conv2d(const float* x, int64_t batch, int64_t in_c, int64_t h, int64_t w, const float* weight,
              const float* bias, int64_t out_c, int64_t kh, int64_t kw, int64_t stride, int64_t pad_top,
              int64_t pad_left, int64_t out_h, int64_t out_w, float* y) override {
    cpu::Conv2d(x, batch, in_c, h, w, weight, bias, out_c, kh, kw, stride, pad_top, pad_left, out_h, out_w, y);
  }
  void ChannelAffine(float* y, int64_t rows, int64_t cols, const float* scale, const float* shift,
                     bool relu) override {
    cpu::ChannelAffine(y, rows, cols, scale, shift, relu);
  }
  void MaxPool2d(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, int64_t kernel, int64_t stride,
                 int64_t out_h, int64_t out_w, float* y) override {
    cpu::MaxPool2d(x, batch, h, w, c, kernel, stride, out_h, out_w, y);
  }
  void MeanRows(const float* x, int64_t batch, int64_t n, int64_t cols, float* y) override {
    cpu::MeanRows(x, batch, n, cols, y);
  }
  void Scale(float* x, int64_t n, float alpha) override { cpu::Scale(x, n, alpha); }
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
