// The CUDA backend: one device, one stream and one cuBLAS handle per model; weights uploaded once
// on that stream (matrices in the compute precision, see RoundsProductInputs); activations in float32 device memory from a caching pool;
// matrix products through cuBLAS, everything else through the kernels in kernels/.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cublas_library.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm_attention.h"
#include "backend/cuda/kernel_check_hooks.h"
#include "backend/cuda/kernels/kernels.h"
#include "core/engine_error.h"

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

// A weight in device memory: float32, or (kMatrix in a half-precision model) the precision's
// 16-bit type, converted on the device.
class CudaWeight final : public Weight {
 public:
  CudaWeight(int device, void* data, DType dtype, int64_t rows, int64_t cols, WeightUse use)
      : device_(device), data_(data), dtype_(dtype), rows_(rows), cols_(cols), use_(use) {}
  ~CudaWeight() override {
    cudaSetDevice(device_);
    cudaFree(data_);
  }
  DType dtype() const override { return dtype_; }
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  WeightUse use() const override { return use_; }
  const float* values() const override { return use_ == WeightUse::kValues ? static_cast<const float*>(data_) : nullptr; }
  const void* matrix() const { return data_; }

 private:
  int device_;
  void* data_;
  DType dtype_;
  int64_t rows_, cols_;
  WeightUse use_;
};

const CudaWeight& Dev(const Weight* w) { return static_cast<const CudaWeight&>(w->resolved()); }

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, Precision precision) : device_(device), precision_(precision) {
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    const cuda::CublasLibrary& blas = Cublas();
    CUBLAS_CHECK(blas.Create(&blas_));
    CUBLAS_CHECK(blas.SetStream(blas_, stream_));
    std::lock_guard<std::mutex> lock(LiveMutex());
    Live().push_back(this);
  }

  ~CudaBackend() override {
    {
      std::lock_guard<std::mutex> lock(LiveMutex());
      Live().erase(std::remove(Live().begin(), Live().end(), this), Live().end());
    }
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    pool_.Trim();
    if (blas_ != nullptr) Cublas().Destroy(blas_);
    cudaStreamDestroy(stream_);
  }

  // Whether `backend` is a CudaBackend alive now (kernel-check hook, see cuda_checks).
  static bool IsLive(const Backend* backend) {
    std::lock_guard<std::mutex> lock(LiveMutex());
    return std::find(Live().begin(), Live().end(), backend) != Live().end();
  }

  std::string name() const override { return "cuda:" + std::to_string(device_); }
  Precision precision() const override { return precision_; }
  bool serializes_calls() const override { return true; }

  std::unique_ptr<BackendBuffer> Allocate(size_t floats) override {
    Bind();
    return std::make_unique<DeviceBuffer>(pool_, floats);
  }

  // Uploads on the model's own stream (never the legacy default stream, which the non-blocking
  // compute stream does not order against); the graph synchronises once when loading ends. From
  // pageable memory cudaMemcpyAsync returns once the bytes are staged, so the caller may free
  // its host copy at once.
  WeightRef LoadWeight(const HostWeight& host, WeightUse use) override {
    Bind();
    CheckFinite(host);
    const size_t n = static_cast<size_t>(host.rows * host.cols);
    const bool half = use == WeightUse::kMatrix && RoundsProductInputs(precision_);
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(1, n) * (half ? 2 : sizeof(float))));
    auto weight = std::make_shared<CudaWeight>(device_, p, half ? ProductDType(precision_) : DType::kFloat32, host.rows, host.cols, use);
    if (!half) {
      CUDA_CHECK(cudaMemcpyAsync(p, host.data, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
      return weight;
    }
    DeviceBuffer staging(pool_, n);
    CUDA_CHECK(cudaMemcpyAsync(staging.data(), host.data, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
    cuda::LaunchConvert(staging.data(), static_cast<int64_t>(n), precision_ == Precision::kBfloat16, p, stream_);
    return weight;  // the staging block returns to the pool; the next user queues after the convert
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
  void Synchronize() override {
    Bind();
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // Every op binds the model's device first: calls run on libuv's pool threads, whose current
  // device is whatever the last model on that thread set.
  void Run(const Op& op) override {
    Bind();
    std::visit([&](const auto& o) { Exec(o); }, op);
  }

 private:
  static void Contiguous(bool ok, const char* what) {
    if (!ok) throw EngineError(ErrorCode::kInternal, std::string("cuda backend: ") + what + " needs contiguous rows");
  }

  void Exec(const LinearOp& op) {
    const int64_t rows = op.rows, out = op.weight->rows(), in = op.weight->cols();
    if (rows == 0 || out == 0) return;
    const float* bias = op.bias ? op.bias->values() : nullptr;
    if (op.residual == nullptr) {
      float beta = 0.0f;
      if (bias != nullptr) {  // bias rows first; the product accumulates onto them
        const int64_t shape[2] = {rows, out}, src[2] = {0, 1}, dst[2] = {op.ldy, 1};
        cuda::LaunchStridedCopy(op.y, dst, bias, src, shape, 2, stream_);
        beta = 1.0f;
      }
      Gemm(op.x, rows, in, op.ldx, *op.weight, out, op.y, op.ldy, beta);
      if (op.gelu) {
        Contiguous(op.ldy == out, "linear with gelu");
        cuda::LaunchGelu(op.y, rows * out, stream_);
      }
      return;
    }
    Contiguous(op.ldy == out, "linear with a residual");
    std::unique_ptr<DeviceBuffer> activated;
    if (op.gelu) {  // gelu(x W^T + b) first, then the residual joins
      activated = std::make_unique<DeviceBuffer>(pool_, static_cast<size_t>(rows * out));
      LinearOp inner = op;
      inner.residual = nullptr;
      inner.y = activated->data();
      inner.ldy = out;
      Exec(inner);
    }
    if (op.residual != op.y || op.residual_period != 0 || op.ld_residual != op.ldy) {
      const int64_t period = op.residual_period ? op.residual_period : rows;
      const int64_t shape[3] = {rows / period, period, out};
      const int64_t src[3] = {0, op.ld_residual, 1}, dst[3] = {period * out, out, 1};
      cuda::LaunchStridedCopy(op.y, dst, op.residual, src, shape, 3, stream_);
    }
    if (activated) {
      cuda::LaunchAddInPlace(op.y, activated->data(), rows * out, stream_);
      return;
    }
    if (bias != nullptr) cuda::LaunchAddRowsBroadcast(op.y, bias, rows, out, 1, stream_);
    Gemm(op.x, rows, in, op.ldx, *op.weight, out, op.y, op.ldy, 1.0f);
  }

  // Kernel dispatch (gpukern): the one-pass LayerNorm takes strides and the residual itself.
  void Exec(const LayerNormOp& op) {
    cuda::LayerNormArgs args;
    args.x = op.x;
    args.ldx = op.ldx;
    args.residual = op.residual;
    args.ld_residual = op.ld_residual;
    args.rows = op.rows;
    args.dim = op.dim;
    args.gamma = op.gamma->values();
    args.beta = op.beta->values();
    args.eps = op.eps;
    args.y = op.y;
    args.ldy = op.ldy;
    args.y_dtype = op.y_dtype;
    cuda::LaunchLayerNorm(args, stream_);
  }

  // The attention kernels read contiguous [batch, rows, heads * width] blocks: a strided view
  // (a column block of a fused QKV buffer, a block shared across the batch) is gathered first.
  const float* Packed(const RowsView& view, int64_t batch, int64_t rows, int64_t width, std::unique_ptr<DeviceBuffer>* holder) {
    if (view.ld == width && view.batch_stride == rows * width) return view.data;
    *holder = std::make_unique<DeviceBuffer>(pool_, static_cast<size_t>(batch * rows * width));
    const int64_t shape[3] = {batch, rows, width}, src[3] = {view.batch_stride, view.ld, 1}, dst[3] = {rows * width, width, 1};
    cuda::LaunchStridedCopy((*holder)->data(), dst, view.data, src, shape, 3, stream_);
    return (*holder)->data();
  }

  // Kernel dispatch (gpukern): half-precision models run the tensor-core flash attention where a
  // tile shape holds the head widths (kernels/flash_attention_plan.h); PERCEIVER_CUDA_ATTENTION
  // (gemm | fused) still selects the older paths, which bench/gpu-check.sh compares.
  void Exec(const AttentionOp& op) {
    if (op.probs == nullptr && RoundsProductInputs(precision_) && AttentionChoice() == nullptr && cuda::FlashAttentionSupports(op.dqk, op.dv)) {
      RunFlashAttention(op, ProductDType(precision_), 0);
      return;
    }
    AttentionArgs args;
    args.batch = op.batch;
    args.heads = op.heads;
    args.nq = op.nq;
    args.nk = op.nk;
    args.dqk = op.dqk;
    args.dv = op.dv;
    args.scale = op.scale;
    args.out = op.out;
    args.probs = op.probs;
    std::unique_ptr<DeviceBuffer> q, k, v, mask;
    args.q = Packed(op.q, op.batch, op.nq, op.heads * op.dqk, &q);
    args.k = Packed(op.k, op.batch, op.nk, op.heads * op.dqk, &k);
    args.v = Packed(op.v, op.batch, op.nk, op.heads * op.dv, &v);
    std::vector<uint8_t> from_lengths;
    const uint8_t* host_mask = op.key_mask;
    if (op.key_lengths != nullptr) {
      from_lengths.assign(static_cast<size_t>(op.batch * op.nk), 0);
      for (int64_t b = 0; b < op.batch; ++b) std::fill_n(from_lengths.begin() + b * op.nk, op.key_lengths[b], uint8_t{1});
      host_mask = from_lengths.data();
    }
    if (host_mask != nullptr) {  // the mask comes in host memory
      const size_t bytes = static_cast<size_t>(op.batch * op.nk);
      mask = std::make_unique<DeviceBuffer>(pool_, (bytes + 3) / 4);
      CUDA_CHECK(cudaMemcpyAsync(mask->data(), host_mask, bytes, cudaMemcpyHostToDevice, stream_));
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

  void Exec(const EmbeddingOp& op) {
    const size_t n = static_cast<size_t>(op.batch * op.seq);
    DeviceBuffer device_ids(pool_, n);  // int32 ids fit in float-sized slots
    CUDA_CHECK(cudaMemcpyAsync(device_ids.data(), op.ids, n * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    cuda::LaunchEmbeddingLookup(reinterpret_cast<const int32_t*>(device_ids.data()), op.batch, op.seq, op.table->values(),
                                op.positions ? op.positions->values() : nullptr, op.table->cols(), op.out, stream_);
  }

  void Exec(const CopyOp& op) {
    if (op.rank == 1 && op.dst_strides[0] == 1 && op.src_strides[0] == 1) {
      if (op.shape[0] > 0) {
        CUDA_CHECK(cudaMemcpyAsync(op.dst, op.src, op.shape[0] * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
      }
      return;
    }
    cuda::LaunchStridedCopy(op.dst, op.dst_strides, op.src, op.src_strides, op.shape, op.rank, stream_);
  }
  void Exec(const AddRowsOp& op) { cuda::LaunchAddRowsBroadcast(op.y, op.x, op.rows, op.cols, op.period, stream_); }
  void Exec(const GatherRowsOp& op) {
    DeviceBuffer device_indices(pool_, static_cast<size_t>(op.count) * 2);  // int64 = two float slots
    CUDA_CHECK(cudaMemcpyAsync(device_indices.data(), op.indices, op.count * sizeof(int64_t), cudaMemcpyHostToDevice, stream_));
    cuda::LaunchGatherRows(op.dst, op.src, reinterpret_cast<const int64_t*>(device_indices.data()), op.count, op.batch, op.src_rows,
                           op.cols, stream_);
  }
  void Exec(const Conv2dOp& op) {
    const int64_t pixels = op.batch * op.out_h * op.out_w, patch = op.in_c * op.kh * op.kw;
    DeviceBuffer cols(pool_, static_cast<size_t>(pixels * patch));
    cuda::LaunchIm2col(op.x, op.batch, op.in_c, op.h, op.w, op.kh, op.kw, op.stride, op.pad_top, op.pad_left, op.out_h, op.out_w,
                       cols.data(), stream_);
    LinearOp linear;
    linear.x = cols.data();
    linear.rows = pixels;
    linear.ldx = patch;
    linear.weight = op.weight;
    linear.bias = op.bias;
    linear.y = op.y;
    linear.ldy = op.weight->rows();
    Exec(linear);
  }
  void Exec(const ChannelAffineOp& op) {
    cuda::LaunchChannelAffine(op.y, op.rows, op.cols, op.scale->values(), op.shift->values(), op.relu, stream_);
  }
  void Exec(const MaxPoolOp& op) {
    cuda::LaunchMaxPool2d(op.x, op.batch, op.h, op.w, op.c, op.kernel, op.stride, op.out_h, op.out_w, op.y, stream_);
  }
  void Exec(const MeanRowsOp& op) { cuda::LaunchMeanRows(op.x, op.batch, op.n, op.cols, op.y, stream_); }
  void Exec(const ScaleOp& op) { cuda::LaunchScale(op.x, op.n, op.alpha, stream_); }
  // Kernel dispatch (gpukern).
  void Exec(const FourierFeaturesOp& op) {
    cuda::FourierFeaturesArgs args;
    args.dims = op.dims;
    args.n = 1;
    for (int k = 0; k < op.dims && k < kMaxFourierDims; ++k) {
      args.index_dims[k] = op.index_dims[k];
      args.max_resolution[k] = op.max_resolution[k];
      args.n *= op.index_dims[k];
    }
    args.bands = op.bands;
    args.concat_pos = op.concat_pos;
    args.sine_only = op.sine_only;
    args.out = op.out;
    cuda::LaunchFourierFeatures(args, stream_);
  }

  // PERCEIVER_CUDA_ATTENTION=fused selects the single fused kernel (kernels/attention.cu, float32
  // arithmetic) instead of the tensor-core GEMM attention (gemm_attention.cc); both are checked
  // against the CPU reference by bench/gpu-check.sh.
  static bool UseFusedAttention() {
    const char* choice = AttentionChoice();
    return choice != nullptr && std::strcmp(choice, "fused") == 0;
  }
  static const char* AttentionChoice() {
    const char* choice = std::getenv("PERCEIVER_CUDA_ATTENTION");
    return choice != nullptr && *choice != '\0' && std::strcmp(choice, "flash") != 0 ? choice : nullptr;
  }

 public:
  // The tensor-core flash attention with key lengths (int32) or the mask uploaded beside it and the
  // split workspace from the pool; force_splits > 0 fixes the key-range split (kernel checks).
  void RunFlashAttention(const AttentionOp& op, DType dtype, int force_splits) {
    Bind();
    cuda::flash::Params p = cuda::FlashAttentionParams(op);
    std::unique_ptr<DeviceBuffer> lengths, mask, workspace;
    if (op.key_lengths != nullptr) {
      std::vector<int32_t> host(static_cast<size_t>(op.batch));
      for (int64_t b = 0; b < op.batch; ++b) host[b] = static_cast<int32_t>(std::min<int64_t>(op.key_lengths[b], op.nk));
      lengths = std::make_unique<DeviceBuffer>(pool_, host.size());
      CUDA_CHECK(cudaMemcpyAsync(lengths->data(), host.data(), host.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
      p.key_lengths = reinterpret_cast<const int32_t*>(lengths->data());
    } else if (op.key_mask != nullptr) {
      const size_t bytes = static_cast<size_t>(op.batch * op.nk);
      mask = std::make_unique<DeviceBuffer>(pool_, (bytes + 3) / 4);
      CUDA_CHECK(cudaMemcpyAsync(mask->data(), op.key_mask, bytes, cudaMemcpyHostToDevice, stream_));
      p.key_mask = reinterpret_cast<const uint8_t*>(mask->data());
    }
    const size_t floats = cuda::FlashAttentionWorkspaceFloats(p, force_splits);
    if (floats > 0) workspace = std::make_unique<DeviceBuffer>(pool_, floats);
    cuda::LaunchFlashAttention(p, dtype, workspace ? workspace->data() : nullptr, floats, force_splits, stream_);
  }

 private:

  void Bind() { CUDA_CHECK(cudaSetDevice(device_)); }

  static std::mutex& LiveMutex() {
    static std::mutex mutex;
    return mutex;
  }
  static std::vector<const Backend*>& Live() {
    static std::vector<const Backend*> live;
    return live;
  }

  // y[rows, out] (+)= x[rows, in] @ w[out, in]^T in the weight's dtype. cuBLAS is column-major:
  // this is y^T = w x^T, i.e. C(out x rows) = op_T(W: in x out) * X(in x rows).
  void Gemm(const float* x, int64_t rows, int64_t in, int64_t ldx, const Weight& weight, int64_t out, float* y, int64_t ldy, float beta) {
    const cuda::CublasLibrary& blas = Cublas();
    const float alpha = 1.0f;
    if (rows > INT32_MAX || in > INT32_MAX || out > INT32_MAX) ThrowInvalidArgument("linear: dimensions beyond cuBLAS's int range");
    const void* w = Dev(&weight).matrix();
    if (weight.dtype() != DType::kFloat32) {
      const bool bf16 = weight.dtype() == DType::kBfloat16;
      std::unique_ptr<DeviceBuffer> compact;
      if (ldx != in) {
        compact = std::make_unique<DeviceBuffer>(pool_, static_cast<size_t>(rows * in));
        const int64_t shape[2] = {rows, in}, src[2] = {ldx, 1}, dst[2] = {in, 1};
        cuda::LaunchStridedCopy(compact->data(), dst, x, src, shape, 2, stream_);
        x = compact->data();
      }
      DeviceBuffer xh(pool_, static_cast<size_t>((rows * in + 1) / 2));
      cuda::LaunchConvert(x, rows * in, bf16, xh.data(), stream_);
      const int type = bf16 ? cuda::kR16BF : cuda::kR16F;
      CUBLAS_CHECK(blas.GemmEx(blas_, cuda::kOpT, cuda::kOpN, static_cast<int>(out), static_cast<int>(rows), static_cast<int>(in), &alpha,
                               w, type, static_cast<int>(in), xh.data(), type, static_cast<int>(in), &beta, y, cuda::kR32F,
                               static_cast<int>(ldy), cuda::kCompute32F, cuda::kGemmDefault));
      return;
    }
    const int compute = precision_ == Precision::kTfloat32 ? cuda::kCompute32FFastTF32 : cuda::kCompute32F;
    CUBLAS_CHECK(blas.GemmEx(blas_, cuda::kOpT, cuda::kOpN, static_cast<int>(out), static_cast<int>(rows), static_cast<int>(in), &alpha,
                             w, cuda::kR32F, static_cast<int>(in), x, cuda::kR32F, static_cast<int>(ldx), &beta, y, cuda::kR32F,
                             static_cast<int>(ldy), compute, cuda::kGemmDefault));
  }

  int device_;
  Precision precision_;
  cudaStream_t stream_ = nullptr;
  cuda::cublasHandle_t blas_ = nullptr;
  DevicePool pool_;
};

}  // namespace

// Kernel-check hook (gpukern, see kernel_check_hooks.h).
void cuda_checks::FlashAttention(Backend& backend, const AttentionOp& op, DType dtype, int force_splits) {
  // No RTTI in this build (node-gyp's -fno-rtti): the live CUDA backends are known by address.
  if (!CudaBackend::IsLive(&backend)) throw EngineError(ErrorCode::kInternal, "flash attention check: " + backend.name() + " is not a CUDA backend");
  auto& cuda = static_cast<CudaBackend&>(backend);
  cuda.RunFlashAttention(op, dtype, force_splits);
  cuda.Synchronize();
}

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
