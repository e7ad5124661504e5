// The CUDA backend: one device, one stream and one cuBLAS handle per model; weights uploaded once
// (matrices in the compute precision); activations in float32 device memory from a caching pool;
// matrix products through cuBLAS, everything else through the kernels in kernels/.
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cublas_library.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm_attention.h"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver {

namespace {

using cuda::Cublas;

// Device memory reused across calls: freed blocks wait in per-size lists, so a model's steady
// state does no cudaMalloc / cudaFree (which synchronise the device). A block given back while
// kernels that use it are still queued needs no synchronisation: every op of the model runs on
// its one stream, so the next user of the block is queued after them. Host staging is safe too:
// cudaMemcpyAsync from pageable memory returns only once the bytes are staged.
class DevicePool {
 public:
  ~DevicePool() { Trim(); }

  void* Take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        return p;
      }
    }
    void* p = nullptr;
    cudaError_t status = cudaMalloc(&p, bytes);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      Trim();  // give cached blocks back and try once more
      status = cudaMalloc(&p, bytes);
    }
    CUDA_CHECK(status);
    return p;
  }

  void Give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_[bytes].push_back(p);
  }

  void Trim() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, list] : free_) {
      for (void* p : list) cudaFree(p);
    }
    free_.clear();
  }

 private:
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
};

class DeviceBuffer final : public BackendBuffer {
 public:
  DeviceBuffer(DevicePool& pool, size_t floats) : pool_(pool), size_(floats), bytes_(std::max<size_t>(1, floats) * sizeof(float)) {
    data_ = static_cast<float*>(pool_.Take(bytes_));
  }
  ~DeviceBuffer() override { pool_.Give(data_, bytes_); }
  float* data() override { return data_; }
  size_t size() const override { return size_; }

 private:
  DevicePool& pool_;
  size_t size_, bytes_;
  float* data_;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, Precision precision) : device_(device), precision_(precision) {
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    const cuda::CublasLibrary& blas = Cublas();
    CUBLAS_CHECK(blas.Create(&blas_));
    CUBLAS_CHECK(blas.SetStream(blas_, stream_));
  }

  ~CudaBackend() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    for (void* p : weights_) cudaFree(p);
    pool_.Trim();
    if (blas_ != nullptr) Cublas().Destroy(blas_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda:" + std::to_string(device_); }
  bool serializes_calls() const override { return true; }

  std::unique_ptr<BackendBuffer> Allocate(size_t floats) override {
    Bind();
    return std::make_unique<DeviceBuffer>(pool_, floats);
  }

  const float* Weight(const float* host, size_t floats) override {
    Bind();
    void* p = Upload(host, floats * sizeof(float));
    return static_cast<const float*>(p);
  }

  const float* MatrixWeight(const float* host, int64_t rows, int64_t cols) override {
    if (!HalfPrecision()) return Weight(host, static_cast<size_t>(rows * cols));
    Bind();
    const size_t n = static_cast<size_t>(rows * cols);
    DeviceBuffer staging(pool_, n);
    CUDA_CHECK(cudaMemcpyAsync(staging.data(), host, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
    void* half = nullptr;
    CUDA_CHECK(cudaMalloc(&half, std::max<size_t>(1, n) * 2));
    weights_.push_back(half);
    cuda::LaunchConvert(staging.data(), static_cast<int64_t>(n), precision_ == Precision::kBfloat16, half, stream_);
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return static_cast<const float*>(half);  // opaque: 16-bit words, read by Gemm only
  }

  void CopyToHost(float* dst, const float* src, size_t n) override {
    Bind();
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void CopyFromHost(float* dst, const float* src, size_t n) override {
    Bind();
    // From pageable memory cudaMemcpyAsync returns once the bytes are staged, so the caller may
    // reuse its buffer at once; no stream synchronisation is needed.
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
  }
  void Copy(float* dst, const float* src, size_t n) override {
    if (n) CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  }
  void Synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  void Linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias, int64_t out, float* y) override {
    if (rows == 0 || out == 0) return;
    float beta = 0.0f;
    if (bias != nullptr) {
      // Bias rows first; the product accumulates onto them.
      const int64_t shape[2] = {rows, out}, src[2] = {0, 1}, dst[2] = {out, 1};
      cuda::LaunchStridedCopy(y, dst, bias, src, shape, 2, stream_);
      beta = 1.0f;
    }
    Gemm(x, rows, in, w, out, y, beta);
  }

  void LayerNorm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps, float* y) override {
    cuda::LaunchLayerNorm(x, rows, dim, gamma, beta, eps, y, stream_);
  }
  void Gelu(float* x, int64_t n) override { cuda::LaunchGelu(x, n, stream_); }
  void AddInPlace(float* y, const float* x, int64_t n) override { cuda::LaunchAddInPlace(y, x, n, stream_); }

  void Attention(const AttentionArgs& host_args) override {
    AttentionArgs args = host_args;
    std::unique_ptr<DeviceBuffer> mask;
    if (host_args.key_mask != nullptr) {  // the mask comes in host memory
      const size_t bytes = static_cast<size_t>(args.batch * args.nk);
      mask = std::make_unique<DeviceBuffer>(pool_, (bytes + 3) / 4);
      CUDA_CHECK(cudaMemcpyAsync(mask->data(), host_args.key_mask, bytes, cudaMemcpyHostToDevice, stream_));
      args.key_mask = reinterpret_cast<const uint8_t*>(mask->data());
    }
    if (args.probs != nullptr) cuda::LaunchAttentionProbs(args, stream_);
    if (UseFusedAttention()) {
      cuda::LaunchAttention(args, stream_);
      return;
    }
    cuda::GemmAttentionContext context;
    context.blas = blas_;
    context.stream = stream_;
    context.precision = precision_;
    context.allocate = [this](size_t floats) -> std::unique_ptr<BackendBuffer> { return std::make_unique<DeviceBuffer>(pool_, floats); };
    // PERCEIVER_CUDA_SCORE_BUDGET_MB bounds one chunk's scores (default 256 MB); the GPU check
    // sets it small to exercise the chunked paths.
    if (const char* budget = std::getenv("PERCEIVER_CUDA_SCORE_BUDGET_MB")) {
      const long mb = std::strtol(budget, nullptr, 10);
      if (mb > 0) context.score_budget_bytes = static_cast<size_t>(mb) << 20;
    }
    cuda::GemmAttention(args, context);
  }

  void EmbeddingLookup(const int32_t* ids, int64_t batch, int64_t seq, const float* table, int64_t vocab,
                       const float* positions, int64_t dim, float* out) override {
    const size_t n = static_cast<size_t>(batch * seq);
    DeviceBuffer device_ids(pool_, n);  // int32 ids fit in float-sized slots
    CUDA_CHECK(cudaMemcpyAsync(device_ids.data(), ids, n * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    cuda::LaunchEmbeddingLookup(reinterpret_cast<const int32_t*>(device_ids.data()), batch, seq, table, positions, dim, out, stream_);
  }

  void StridedCopy(float* dst, const int64_t* dst_strides, const float* src, const int64_t* src_strides, const int64_t* shape,
                   int rank) override {
    cuda::LaunchStridedCopy(dst, dst_strides, src, src_strides, shape, rank, stream_);
  }
  void AddRowsBroadcast(float* y, const float* x, int64_t rows, int64_t cols, int64_t period) override {
    cuda::LaunchAddRowsBroadcast(y, x, rows, cols, period, stream_);
  }
  void GatherRows(float* dst, const float* src, const int64_t* indices, int64_t count, int64_t batch, int64_t src_rows,
                  int64_t cols) override {
    DeviceBuffer device_indices(pool_, static_cast<size_t>(count) * 2);  // int64 = two float slots
    CUDA_CHECK(cudaMemcpyAsync(device_indices.data(), indices, count * sizeof(int64_t), cudaMemcpyHostToDevice, stream_));
    cuda::LaunchGatherRows(dst, src, reinterpret_cast<const int64_t*>(device_indices.data()), count, batch, src_rows, cols, stream_);
  }
  void Conv2d(const float* x, int64_t batch, int64_t in_c, int64_t h, int64_t w, const float* weight, const float* bias,
              int64_t out_c, int64_t kh, int64_t kw, int64_t stride, int64_t pad_top, int64_t pad_left, int64_t out_h,
              int64_t out_w, float* y) override {
    const int64_t pixels = batch * out_h * out_w, patch = in_c * kh * kw;
    DeviceBuffer cols(pool_, static_cast<size_t>(pixels * patch));
    cuda::LaunchIm2col(x, batch, in_c, h, w, kh, kw, stride, pad_top, pad_left, out_h, out_w, cols.data(), stream_);
    Linear(cols.data(), pixels, patch, weight, bias, out_c, y);
  }
  void ChannelAffine(float* y, int64_t rows, int64_t cols, const float* scale, const float* shift, bool relu) override {
    cuda::LaunchChannelAffine(y, rows, cols, scale, shift, relu, stream_);
  }
  void MaxPool2d(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, int64_t kernel, int64_t stride, int64_t out_h,
                 int64_t out_w, float* y) override {
    cuda::LaunchMaxPool2d(x, batch, h, w, c, kernel, stride, out_h, out_w, y, stream_);
  }
  void MeanRows(const float* x, int64_t batch, int64_t n, int64_t cols, float* y) override {
    cuda::LaunchMeanRows(x, batch, n, cols, y, stream_);
  }
  void Scale(float* x, int64_t n, float alpha) override { cuda::LaunchScale(x, n, alpha, stream_); }

 private:
  // PERCEIVER_CUDA_ATTENTION=fused selects the single fused kernel (kernels/attention.cu, float32
  // arithmetic) instead of the tensor-core GEMM attention (gemm_attention.cc); both are checked
  // against the CPU reference by bench/gpu-check.sh.
  static bool UseFusedAttention() {
    const char* choice = std::getenv("PERCEIVER_CUDA_ATTENTION");
    return choice != nullptr && std::strcmp(choice, "fused") == 0;
  }

  bool HalfPrecision() const { return precision_ == Precision::kFloat16 || precision_ == Precision::kBfloat16; }

  void Bind() { CUDA_CHECK(cudaSetDevice(device_)); }

  void* Upload(const void* host, size_t bytes) {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(1, bytes)));
    weights_.push_back(p);
    CUDA_CHECK(cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice));
    return p;
  }

  // y[rows, out] (+)= x[rows, in] @ w[out, in]^T in the model's precision. cuBLAS is column-major:
  // this is y^T = w x^T, i.e. C(out x rows) = op_T(W: in x out) * X(in x rows).
  void Gemm(const float* x, int64_t rows, int64_t in, const float* w, int64_t out, float* y, float beta) {
    const cuda::CublasLibrary& blas = Cublas();
    const float alpha = 1.0f;
    if (rows > INT32_MAX || in > INT32_MAX || out > INT32_MAX) ThrowInvalidArgument("linear: dimensions beyond cuBLAS's int range");
    if (HalfPrecision()) {
      const bool bf16 = precision_ == Precision::kBfloat16;
      DeviceBuffer xh(pool_, static_cast<size_t>((rows * in + 1) / 2));
      cuda::LaunchConvert(x, rows * in, bf16, xh.data(), stream_);
      const int type = bf16 ? cuda::kR16BF : cuda::kR16F;
      CUBLAS_CHECK(blas.GemmEx(blas_, cuda::kOpT, cuda::kOpN, static_cast<int>(out), static_cast<int>(rows), static_cast<int>(in), &alpha,
                               w, type, static_cast<int>(in), xh.data(), type, static_cast<int>(in), &beta, y, cuda::kR32F,
                               static_cast<int>(out), cuda::kCompute32F, cuda::kGemmDefault));
      return;
    }
    const int compute = precision_ == Precision::kTfloat32 ? cuda::kCompute32FFastTF32 : cuda::kCompute32F;
    CUBLAS_CHECK(blas.GemmEx(blas_, cuda::kOpT, cuda::kOpN, static_cast<int>(out), static_cast<int>(rows), static_cast<int>(in), &alpha,
                             w, cuda::kR32F, static_cast<int>(in), x, cuda::kR32F, static_cast<int>(in), &beta, y, cuda::kR32F,
                             static_cast<int>(out), compute, cuda::kGemmDefault));
  }

  int device_;
  Precision precision_;
  cudaStream_t stream_ = nullptr;
  cuda::cublasHandle_t blas_ = nullptr;
  DevicePool pool_;
  std::vector<void*> weights_;
};

}  // namespace

std::unique_ptr<Backend> CreateCudaBackend(int device, Precision precision) {
  const CudaStatus status = ProbeCuda();
  if (!status.available) throw EngineError(ErrorCode::kBackendUnavailable, status.reason);
  if (device < 0 || device >= status.device_count) {
    throw EngineError(ErrorCode::kInvalidArgument, "device: cuda:" + std::to_string(device) + " does not exist; this machine has " +
                                                       std::to_string(status.device_count) + " CUDA device(s)");
  }
  return std::make_unique<CudaBackend>(device, precision);
}

}  // namespace perceiver
