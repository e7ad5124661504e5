// A Backend decorator that times every op and prints a per-op summary to stderr when the backend
// is destroyed. Enabled with PERCEIVER_PROFILE=1; it synchronizes after each op, so the figures
// are per-op wall times, not overlapped ones.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "backend/backend.h"

namespace perceiver {

namespace {

class ProfilingBackend final : public Backend {
 private:
  struct Stat {
    int64_t calls = 0;
    double seconds = 0;
  };
  template <typename F>
  auto Time(const std::string& name, F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    struct Record {
      ProfilingBackend* self;
      const std::string& name;
      std::chrono::steady_clock::time_point t0;
      ~Record() {
        self->inner_->Synchronize();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::lock_guard<std::mutex> lock(self->mutex_);
        Stat& stat = self->stats_[name];
        stat.calls++;
        stat.seconds += s;
      }
    } record{this, name, t0};
    return f();
  }

 public:
  explicit ProfilingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  ~ProfilingBackend() override {
    double total = 0;
    for (const auto& [name, stat] : stats_) total += stat.seconds;
    std::fprintf(stderr, "perceiver-io profile (%s backend), %.3f s in ops:\n", inner_->name().c_str(), total);
    for (const auto& [name, stat] : stats_) {
      std::fprintf(stderr, "  %-32s %8lld calls %9.3f s %5.1f%%\n", name.c_str(), static_cast<long long>(stat.calls),
                   stat.seconds, total > 0 ? 100.0 * stat.seconds / total : 0.0);
    }
  }

  std::string name() const override { return inner_->name(); }
  std::unique_ptr<BackendBuffer> Allocate(size_t floats) override {
    return Time("allocate", [&] { return inner_->Allocate(floats); });
  }
  const float* Weight(const float* host, size_t floats) override { return inner_->Weight(host, floats); }
  void CopyToHost(float* dst, const float* src, size_t n) override { Time("copy", [&] { inner_->CopyToHost(dst, src, n); }); }
  void CopyFromHost(float* dst, const float* src, size_t n) override { Time("copy", [&] { inner_->CopyFromHost(dst, src, n); }); }
  void Copy(float* dst, const float* src, size_t n) override { Time("copy", [&] { inner_->Copy(dst, src, n); }); }
  void Synchronize() override { inner_->Synchronize(); }
  void Linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias, int64_t out,
              float* y) override {
    Time("linear " + std::to_string(rows) + "x" + std::to_string(in) + "->" + std::to_string(out),
         [&] { inner_->Linear(x, rows, in, w, bias, out, y); });
  }
  void LayerNorm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps,
                 float* y) override {
    Time("layer_norm", [&] { inner_->LayerNorm(x, rows, dim, gamma, beta, eps, y); });
  }
  void Gelu(float* x, int64_t n) override { Time("gelu", [&] { inner_->Gelu(x, n); }); }
  void AddInPlace(float* y, const float* x, int64_t n) override { Time("add", [&] { inner_->AddInPlace(y, x, n); }); }
  void Attention(const AttentionArgs& a) override {
    Time("attention q" + std::to_string(a.nq) + " k" + std::to_string(a.nk) + " h" + std::to_string(a.heads),
         [&] { inner_->Attention(a); });
  }
  void EmbeddingLookup(const int32_t* ids, int64_t batch, int64_t seq, const float* table, int64_t vocab,
                       const float* positions, int64_t dim, float* out) override {
    Time("embedding", [&] { inner_->EmbeddingLookup(ids, batch, seq, table, vocab, positions, dim, out); });
  }
  void StridedCopy(float* dst, const int64_t* dst_strides, const float* src, const int64_t* src_strides,
                   const int64_t* shape, int rank) override {
    Time("strided_copy", [&] { inner_->StridedCopy(dst, dst_strides, src, src_strides, shape, rank); });
  }
  void AddRowsBroadcast(float* y, const float* x, int64_t rows, int64_t cols, int64_t period) override {
    Time("add_rows", [&] { inner_->AddRowsBroadcast(y, x, rows, cols, period); });
  }
  void GatherRows(float* dst, const float* src, const int64_t* indices, int64_t count, int64_t batch,
                  int64_t src_rows, int64_t cols) override {
    Time("gather_rows", [&] { inner_->GatherRows(dst, src, indices, count, batch, src_rows, cols); });
  }
  void Conv2d(const float* x, int64_t batch, int64_t in_c, int64_t h, int64_t w, const float* weight,
              const float* bias, int64_t out_c, int64_t kh, int64_t kw, int64_t stride, int64_t pad_top,
              int64_t pad_left, int64_t out_h, int64_t out_w, float* y) override {
    Time("conv2d " + std::to_string(kh) + "x" + std::to_string(kw), [&] {
      inner_->Conv2d(x, batch, in_c, h, w, weight, bias, out_c, kh, kw, stride, pad_top, pad_left, out_h, out_w, y);
    });
  }
  void ChannelAffine(float* y, int64_t rows, int64_t cols, const float* scale, const float* shift,
                     bool relu) override {
    Time("channel_affine", [&] { inner_->ChannelAffine(y, rows, cols, scale, shift, relu); });
  }
  void MaxPool2d(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, int64_t kernel, int64_t stride,
                 int64_t out_h, int64_t out_w, float* y) override {
    Time("max_pool", [&] { inner_->MaxPool2d(x, batch, h, w, c, kernel, stride, out_h, out_w, y); });
  }
  void MeanRows(const float* x, int64_t batch, int64_t n, int64_t cols, float* y) override {
    Time("mean_rows", [&] { inner_->MeanRows(x, batch, n, cols, y); });
  }
  void Scale(float* x, int64_t n, float alpha) override { Time("scale", [&] { inner_->Scale(x, n, alpha); }); }

 private:
  std::unique_ptr<Backend> inner_;
  std::mutex mutex_;
  std::map<std::string, Stat> stats_;
};

}  // namespace

std::unique_ptr<Backend> WithProfilingIfRequested(std::unique_ptr<Backend> backend) {
  const char* flag = std::getenv("PERCEIVER_PROFILE");
  if (flag == nullptr || flag[0] == '\0' || flag[0] == '0') return backend;
  return std::make_unique<ProfilingBackend>(std::move(backend));
}

}  // namespace perceiver
