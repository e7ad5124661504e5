// The CUDA backend: one device, one stream, one cuBLAS and one cuBLASLt handle per model; weights
// uploaded once on that stream (matrices in the compute precision, see RoundsProductInputs);
// activations in float32 device memory (the graph's arena, arena_backend.h, in front of a caching
// pool); matrix products through cuBLASLt with their epilogues (cuBLAS's GemmEx where cuBLASLt is
// missing or has no algorithm), everything else through the kernels in kernels/.
//
// A steady-state call neither allocates nor waits nor copies from pageable memory: host data
// (inputs, masks, ids, indices) is copied into pinned staging and uploaded from there; outputs are
// downloaded into pinned staging and copied out after the call's one Synchronize (the staging
// is reused from then on). InternalCounts() reports what happened anyway.
//
// Precision: activations and the residual stream stay float32 in device memory in every mode.
// In half modes each product's input is rounded to the compute type on its way in and the
// product accumulates in float32; keeping the residual stream in float32 is the documented
// choice (transformers' bf16 keeps it in bf16, so ours is the more accurate of the two, at the
// cost of float32 traffic between ops). Half activations end to end wait for typed activation
// buffers through backend.h (DType y_dtype is there for it).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cublas_library.h"
#include "backend/cuda/cublaslt_library.h"
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
  explicit DevicePool(std::atomic<int64_t>* allocations) : allocations_(allocations) {}
  ~DevicePool() { Trim(); }

  void* Take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (held_ != nullptr) {  // during a capture: the graph's own blocks first
        auto own = held_->find(bytes);
        if (own != held_->end() && !own->second.empty()) {
          void* p = own->second.back();
          own->second.pop_back();
          return p;
        }
      }
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        return p;
      }
    }
    void* p = nullptr;
    ++*allocations_;
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
    if (held_ != nullptr) {  // freed during a graph capture: the graph's from now on
      (*held_)[bytes].push_back(p);
      return;
    }
    free_[bytes].push_back(p);
  }

  using Blocks = std::map<size_t, std::vector<void*>>;
  // While `blocks` is set (a capture), freed blocks go there instead of back to the pool, and
  // takes look there first: the scratch a captured graph's ops use is the graph's alone (its
  // replays write those addresses), and the pool's cached blocks from the eager warm-up calls
  // cover the capture without a cudaMalloc.
  void Hold(Blocks* blocks) {
    std::lock_guard<std::mutex> lock(mutex_);
    held_ = blocks;
  }

  void Trim() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, list] : free_) {
      for (void* p : list) cudaFree(p);
    }
    free_.clear();
  }

 private:
  std::atomic<int64_t>* allocations_;
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
  Blocks* held_ = nullptr;
};

// Pinned host memory for the copies of one call: a bump allocator over pinned chunks, reset after
// the call's Synchronize (every copy queued from it has completed by then). A call that needs more
// than the chunks hold gets another chunk; at the next reset the chunks merge into one of the
// total size, so from the second call of a shape on, a call allocates nothing.
class PinnedStaging {
 public:
  explicit PinnedStaging(std::atomic<int64_t>* allocations) : allocations_(allocations) {}
  ~PinnedStaging() {
    for (Chunk& c : chunks_) cudaFreeHost(c.data);
  }

  // `bytes` of pinned memory, 256-byte aligned, valid until Reset().
  void* Take(size_t bytes) {
    bytes = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
    for (; current_ < chunks_.size(); ++current_) {
      Chunk& c = chunks_[current_];
      if (c.used + bytes <= c.size) {
        void* p = static_cast<char*>(c.data) + c.used;
        c.used += bytes;
        return p;
      }
    }
    Chunk c;
    c.size = std::max<size_t>(bytes, size_t{4} << 20);
    ++*allocations_;
    CUDA_CHECK(cudaHostAlloc(&c.data, c.size, cudaHostAllocPortable));
    c.used = bytes;
    chunks_.push_back(c);
    current_ = chunks_.size() - 1;
    return c.data;
  }

  // Only once nothing queued reads or writes the chunks (after a stream synchronisation).
  void Reset() {
    if (chunks_.size() > 1) {
      size_t total = 0;
      for (Chunk& c : chunks_) {
        total += c.size;
        cudaFreeHost(c.data);
      }
      chunks_.clear();
      Chunk merged;
      merged.size = total;
      ++*allocations_;
      CUDA_CHECK(cudaHostAlloc(&merged.data, merged.size, cudaHostAllocPortable));
      chunks_.push_back(merged);
    }
    for (Chunk& c : chunks_) c.used = 0;
    current_ = 0;
  }

 private:
  struct Chunk {
    void* data = nullptr;
    size_t size = 0, used = 0;
  };
  std::atomic<int64_t>* allocations_;
  std::vector<Chunk> chunks_;
  size_t current_ = 0;
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

// PERCEIVER_CUDA_ATTENTION's choices (read once per model, in the constructor).
enum class AttentionPath { kFlash, kGemm, kFused };

AttentionPath ParseAttentionPath(const char* value) {
  if (value == nullptr || *value == '\0' || std::strcmp(value, "flash") == 0) return AttentionPath::kFlash;
  if (std::strcmp(value, "gemm") == 0) return AttentionPath::kGemm;
  if (std::strcmp(value, "fused") == 0) return AttentionPath::kFused;
  ThrowInvalidArgument("PERCEIVER_CUDA_ATTENTION", "flash, gemm or fused (or unset)", std::string("\"") + value + "\"");
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, Precision precision)
      : device_(device),
        precision_(precision),
        // PERCEIVER_CUDA_ATTENTION: flash (the default: the tensor-core kernel in half precision
        // where a tile shape holds the head widths, else gemm), gemm (gemm_attention.cc in every
        // precision) or fused (the single float32 kernel, kernels/attention.cu); bench/gpu-check.sh
        // compares them. Parsed before anything is created, so a bad value leaks nothing.
        attention_path_(ParseAttentionPath(std::getenv("PERCEIVER_CUDA_ATTENTION"))) {
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    const cuda::CublasLibrary& blas = Cublas();
    CUBLAS_CHECK(blas.Create(&blas_));
    CUBLAS_CHECK(blas.SetStream(blas_, stream_));
    // The environment is read here, once per model, never per call.
    // The fused kernel's shared-memory limit, queried (and granted to the kernel) once here.
    attention_max_shared_ = cuda::PrepareAttention();
    // PERCEIVER_CUDA_SCORE_BUDGET_MB bounds one chunk's scores in the GEMM attention (default
    // 256 MB); the GPU check sets it small to exercise the chunked paths.
    if (const char* budget = std::getenv("PERCEIVER_CUDA_SCORE_BUDGET_MB")) {
      const long mb = std::strtol(budget, nullptr, 10);
      if (mb > 0) score_budget_bytes_ = static_cast<size_t>(mb) << 20;
    }
    // PERCEIVER_NO_CUBLASLT=1 keeps every product on cuBLAS's GemmEx (the A/B check of the GPU run).
    const char* no_lt = std::getenv("PERCEIVER_NO_CUBLASLT");
    if (no_lt == nullptr || std::strcmp(no_lt, "1") != 0) lt_ = cuda::lt::Load(&lt_missing_);
    // PERCEIVER_CUBLASLT_TUNE=0 takes cuBLASLt's first heuristic candidate instead of timing the
    // best few at a shape's first use.
    const char* tune = std::getenv("PERCEIVER_CUBLASLT_TUNE");
    tune_ = tune == nullptr || std::strcmp(tune, "0") != 0;
    // cuBLASLt's GELU epilogue is the tanh approximation, not the erf GELU of the checkpoints:
    // used only in half precision and only when PERCEIVER_CUBLASLT_GELU=tanh asks for it (the GPU
    // check measures its parity); otherwise GELU is the exact kernel after the product.
    const char* gelu = std::getenv("PERCEIVER_CUBLASLT_GELU");
    lt_tanh_gelu_ = gelu != nullptr && std::strcmp(gelu, "tanh") == 0 && RoundsProductInputs(precision_);
    // PERCEIVER_PROFILE=events: per-op device times from CUDA events, read at each Synchronize
    // (no per-op waits), printed when the model goes.
    const char* profile = std::getenv("PERCEIVER_PROFILE");
    event_profile_ = profile != nullptr && std::strcmp(profile, "events") == 0;
    // PERCEIVER_CUDA_GRAPHS=1: small calls (BeginCall's `replayable`) are captured into a CUDA
    // graph at their third call of a key and replayed from then on. Off by default until a GPU
    // run has measured it against the eager path (bench/gpu-check.sh, part runtime).
    const char* graphs = std::getenv("PERCEIVER_CUDA_GRAPHS");
    graphs_enabled_ = graphs != nullptr && std::strcmp(graphs, "1") == 0 && !event_profile_;
    // One workspace for cuBLAS and cuBLASLt (their calls are ordered on the one stream): neither
    // allocates inside a call, so a call can be captured into a CUDA graph.
    ++allocations_;
    CUDA_CHECK(cudaMalloc(&lt_workspace_, kLtWorkspaceBytes));
    CUBLAS_CHECK(blas.SetWorkspace(blas_, lt_workspace_, kLtWorkspaceBytes));
    if (lt_ != nullptr) CUBLAS_CHECK(lt_->Create(&lt_handle_));
    // Registered last: a constructor that throws leaves nothing behind in the list.
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
    PrintEventProfile();
    if (mode_ == Mode::kCapture) AbortCapture();
    for (auto& [key, entry] : graphs_) DropGraph(entry);
    for (auto& [key, plan] : lt_plans_) DestroyLtPlan(plan);
    if (lt_handle_ != nullptr) lt_->Destroy(lt_handle_);
    for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
    pool_.Trim();
    if (blas_ != nullptr) Cublas().Destroy(blas_);
    if (lt_workspace_ != nullptr) cudaFree(lt_workspace_);  // after the handles that use it
    cudaStreamDestroy(stream_);
  }

  RuntimeCounts InternalCounts() const override {
    RuntimeCounts c;
    c.allocations = allocations_.load();
    c.syncs = syncs_.load();
    c.pageable_copies = pageable_copies_.load();
    return c;
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
    ++allocations_;
    CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(1, n) * (half ? 2 : sizeof(float))));
    auto weight = std::make_shared<CudaWeight>(device_, p, half ? ProductDType(precision_) : DType::kFloat32, host.rows, host.cols, use);
    // Load time: pageable copies (counted) rather than gigabytes of staging.
    ++pageable_copies_;
    if (!half) {
      CUDA_CHECK(cudaMemcpyAsync(p, host.data, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
      return weight;
    }
    DeviceBuffer staging(pool_, n);
    CUDA_CHECK(cudaMemcpyAsync(staging.data(), host.data, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
    cuda::LaunchConvert(staging.data(), static_cast<int64_t>(n), precision_ == Precision::kBfloat16, p, stream_);
    return weight;  // the staging block returns to the pool; the next user queues after the convert
  }

  // Blocking (a DeviceTensor's toHost(), the kernel checks): one pageable copy and one wait.
  void CopyToHost(float* dst, const float* src, size_t n) override {
    Bind();
    ++pageable_copies_;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    WaitStream();
  }
  // Into pinned staging now; into dst after the call's Synchronize.
  void CopyToHostDeferred(float* dst, const float* src, size_t n) override {
    Bind();
    if (n == 0) return;
    const size_t bytes = n * sizeof(float);
    void* staged = staging_.Take(bytes);
    deferred_.push_back(Deferred{dst, staged, bytes});
    if (mode_ == Mode::kReplay) {
      if (ReplayMatches(Logged::kDownload, {}, const_cast<float*>(src), staged, bytes)) {
        call_events_.push_back(CallEvent{Logged::kDownload, {}, const_cast<float*>(src), staged, bytes});
        return;
      }
      Recover();  // then eagerly, below
    }
    Log(Logged::kDownload, {}, const_cast<float*>(src), staged, bytes);
    Captured([&] { CUDA_CHECK(cudaMemcpyAsync(staged, src, bytes, cudaMemcpyDeviceToHost, stream_)); });
  }
  void CancelDeferred() override {
    deferred_.clear();
    if (mode_ == Mode::kCapture) AbortCapture();
    EndCallMode();
  }
  // The caller may reuse `src` at once: its bytes are in pinned staging when this returns.
  void CopyFromHost(float* dst, const float* src, size_t n) override {
    Bind();
    Upload(dst, src, n * sizeof(float));
  }
  // cudaFree waits for the device: called at a shape's planning, never in a steady state.
  void ReleaseCachedMemory() override {
    Bind();
    pool_.Trim();
  }
  void BeginCall(const std::string& key, bool replayable) override {
    EndCallMode();
    if (!graphs_enabled_ || !replayable) return;
    GraphEntry& entry = graphs_[key];
    entry_ = &entry;
    if (entry.failed) {
      mode_ = Mode::kEager;
    } else if (entry.exec != nullptr) {
      mode_ = Mode::kReplay;
    } else if (entry.eager_calls >= 2) {  // the arena's plan and cuBLASLt's choices have settled
      Bind();
      entry.log.clear();
      pool_.Hold(&entry.held);
      if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        (void)cudaGetLastError();
        pool_.Hold(nullptr);
        entry.failed = true;
        return;
      }
      mode_ = Mode::kCapture;
    } else {
      entry.eager_calls++;
    }
  }
  void Synchronize() override {
    Bind();
    if (mode_ == Mode::kCapture) FinishCapture();
    if (mode_ == Mode::kReplay) {
      if (cursor_ == entry_->log.size()) {
        CUDA_CHECK(cudaGraphLaunch(entry_->exec, stream_));
      } else {
        Recover();  // the call did less than the captured one
      }
    }
    EndCallMode();
    WaitStream();
    for (const Deferred& d : deferred_) std::memcpy(d.dst, d.staged, d.bytes);
    deferred_.clear();
    staging_.Reset();
    CollectEventProfile();
  }

  // Every op binds the model's device first: calls run on libuv's pool threads, whose current
  // device is whatever the last model on that thread set.
  void Run(const Op& op) override {
    Bind();
    if (mode_ == Mode::kReplay) {
      if (ReplayOp(op)) return;
      Recover();  // then this op eagerly, below
    }
    if (mode_ == Mode::kCapture) {
      // Something this op does that cannot be captured runs the call so far eagerly instead
      // (this op included) and keeps this key eager.
      Log(Logged::kOp, Signature(op), nullptr, nullptr, 0, &op);
      Captured([&] { ExecOp(op); });
      return;
    }
    if (!event_profile_) {
      ExecOp(op);
      return;
    }
    cudaEvent_t start = TakeEvent(), end = TakeEvent();
    CUDA_CHECK(cudaEventRecord(start, stream_));
    ExecOp(op);
    CUDA_CHECK(cudaEventRecord(end, stream_));
    timed_ops_.push_back(TimedOp{OpLabel(op), start, end});
  }

 private:
  static constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;

  struct Deferred {
    float* dst;
    const void* staged;
    size_t bytes;
  };

  void WaitStream() {
    ++syncs_;
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // Host bytes to device memory through pinned staging (no pageable copy, no wait).
  // In replay, an upload of CopyFromHost writes the staging the graph reads; ops' own uploads are
  // written by ReplayOp.
  void Upload(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    void* staged = staging_.Take(bytes);
    std::memcpy(staged, src, bytes);
    if (mode_ == Mode::kReplay && !in_op_) {
      if (ReplayMatches(Logged::kUpload, {}, dst, staged, bytes)) {
        call_events_.push_back(CallEvent{Logged::kUpload, {}, dst, staged, bytes});
        return;
      }
      Recover();
    }
    Log(in_op_ ? Logged::kOpUpload : Logged::kUpload, {}, dst, staged, bytes);
    if (in_op_) {  // an op's: Run's capture handling covers it
      CUDA_CHECK(cudaMemcpyAsync(dst, staged, bytes, cudaMemcpyHostToDevice, stream_));
      return;
    }
    Captured([&] { CUDA_CHECK(cudaMemcpyAsync(dst, staged, bytes, cudaMemcpyHostToDevice, stream_)); });
  }

  // Runs `work`, already logged; in a capture, a failure abandons the capture and runs the call
  // so far eagerly instead (Recover), `work` included.
  template <typename F>
  void Captured(F&& work) {
    if (mode_ != Mode::kCapture) {
      work();
      return;
    }
    try {
      work();
    } catch (const DeviceFault&) {
      throw;
    } catch (const EngineError&) {
      AbortCapture();
      Recover();
    }
  }

  // --- CUDA graphs (PERCEIVER_CUDA_GRAPHS=1) ------------------------------------------------
  // A replayable call's third run with a key is captured whole (thread-local capture mode:
  // nothing else of the process is affected), with a log of what it did in order: each op's
  // signature (its kind, sizes and every device address), each upload (destination, pinned
  // source, size) and download. A later call with the key is checked against the log step by
  // step instead of being launched: ops are skipped, host bytes are written into the very pinned
  // addresses the graph copies from, and at the call's Synchronize the graph is launched once.
  // Any difference (another address, size or op) runs the call so far eagerly from its own
  // record and keeps the key eager from then on: a replay can be wrong only if the log is.
  enum class Mode { kEager, kCapture, kReplay };
  struct Logged {
    enum Kind { kOp, kUpload, kOpUpload, kDownload };
    Kind kind;
    std::vector<uint64_t> signature;  // kOp
    void* device = nullptr;           // upload: destination; download: source
    void* staged = nullptr;           // pinned
    size_t bytes = 0;
  };
  // What this call did, for running it eagerly when a replay or capture is abandoned.
  struct CallEvent {
    Logged::Kind kind;
    std::vector<Op> op;  // kOp: the op (0 or 1 element; Op is not default-constructible)
    void* device;
    void* staged;
    size_t bytes;
  };
  struct GraphEntry {
    int eager_calls = 0;
    bool failed = false;
    cudaGraphExec_t exec = nullptr;
    std::vector<Logged> log;
    DevicePool::Blocks held;  // pool blocks the graph's ops use as scratch
  };

  void Log(Logged::Kind kind, std::vector<uint64_t> signature, void* device, void* staged, size_t bytes, const Op* op = nullptr) {
    if (mode_ != Mode::kCapture) return;
    entry_->log.push_back(Logged{kind, signature, device, staged, bytes});
    CallEvent event{kind, {}, device, staged, bytes};
    if (op != nullptr) event.op.push_back(*op);
    call_events_.push_back(std::move(event));
  }

  bool ReplayMatches(Logged::Kind kind, const std::vector<uint64_t>& signature, const void* device, const void* staged, size_t bytes) {
    if (cursor_ >= entry_->log.size()) return false;
    const Logged& l = entry_->log[cursor_];
    if (l.kind != kind || l.signature != signature || l.device != device || l.staged != staged || l.bytes != bytes) return false;
    ++cursor_;
    return true;
  }

  // An op in replay: its signature, then its own uploads written into the graph's staging.
  bool ReplayOp(const Op& op) {
    if (!ReplayMatches(Logged::kOp, Signature(op), nullptr, nullptr, 0)) return false;
    for (const auto& [src, bytes] : HostArrays(op)) {
      if (cursor_ >= entry_->log.size() || entry_->log[cursor_].kind != Logged::kOpUpload || entry_->log[cursor_].bytes != bytes) return false;
      void* staged = staging_.Take(bytes);
      if (staged != entry_->log[cursor_].staged) return false;
      std::memcpy(staged, src, bytes);
      ++cursor_;
    }
    // Logged only once it is wholly replayed: a Recover() after a partial match runs it once.
    call_events_.push_back(CallEvent{Logged::kOp, {op}, nullptr, nullptr, 0});
    return true;
  }

  // The host arrays an op uploads, in the order its Exec uploads them.
  std::vector<std::pair<const void*, size_t>> HostArrays(const Op& op) {
    std::vector<std::pair<const void*, size_t>> out;
    if (const auto* a = std::get_if<AttentionOp>(&op)) {
      if (UsesFlash(*a)) {  // RunFlashAttention: int32 lengths, else the mask
        if (const int32_t* lengths = FlashHostLengths(*a)) {
          out.emplace_back(lengths, static_cast<size_t>(a->batch) * sizeof(int32_t));
        } else if (a->key_mask != nullptr) {
          out.emplace_back(a->key_mask, static_cast<size_t>(a->batch * a->nk));
        }
      } else if (const uint8_t* mask = AttentionHostMask(*a)) {
        out.emplace_back(mask, static_cast<size_t>(a->batch * a->nk));
      }
    } else if (const auto* e = std::get_if<EmbeddingOp>(&op)) {
      out.emplace_back(e->ids, static_cast<size_t>(e->batch * e->seq) * sizeof(int32_t));
    } else if (const auto* g = std::get_if<GatherRowsOp>(&op)) {
      out.emplace_back(g->indices, static_cast<size_t>(g->count) * sizeof(int64_t));
    }
    return out;
  }

  // Everything that decides what an op's kernels do: its kind, sizes, flags and device addresses.
  static std::vector<uint64_t> Signature(const Op& op) {
    std::vector<uint64_t> s{static_cast<uint64_t>(op.index())};
    auto add = [&](auto... values) { (s.push_back(Bits(values)), ...); };
    std::visit(
        [&](const auto& o) {
          using T = std::decay_t<decltype(o)>;
          if constexpr (std::is_same_v<T, LinearOp>) {
            add(o.x, o.rows, o.ldx, o.weight, o.bias, o.gelu, o.residual, o.ld_residual, o.residual_period, o.y, o.ldy, static_cast<int>(o.y_dtype));
          } else if constexpr (std::is_same_v<T, LayerNormOp>) {
            add(o.x, o.rows, o.dim, o.ldx, o.residual, o.ld_residual, o.gamma, o.beta, o.eps, o.y, o.ldy, static_cast<int>(o.y_dtype));
          } else if constexpr (std::is_same_v<T, AttentionOp>) {
            add(o.batch, o.heads, o.nq, o.nk, o.dqk, o.dv, o.q.data, o.q.ld, o.q.batch_stride, o.k.data, o.k.ld, o.k.batch_stride, o.v.data,
                o.v.ld, o.v.batch_stride, o.key_lengths != nullptr, o.key_mask != nullptr, o.scale, o.out, o.probs);
            // The lengths too: a kernel may size its launch by them (the mask's bytes are data).
            if (o.key_lengths != nullptr) {
              for (int64_t b = 0; b < o.batch; ++b) add(o.key_lengths[b]);
            }
          } else if constexpr (std::is_same_v<T, EmbeddingOp>) {
            add(o.batch, o.seq, o.table, o.positions, o.out);
          } else if constexpr (std::is_same_v<T, CopyOp>) {
            add(o.dst, o.src, o.rank);
            for (int d = 0; d < o.rank; ++d) add(o.shape[d], o.dst_strides[d], o.src_strides[d]);
          } else if constexpr (std::is_same_v<T, AddRowsOp>) {
            add(o.y, o.x, o.rows, o.cols, o.period);
          } else if constexpr (std::is_same_v<T, GatherRowsOp>) {
            add(o.dst, o.src, o.count, o.batch, o.src_rows, o.cols);
          } else if constexpr (std::is_same_v<T, Conv2dOp>) {
            add(o.x, o.batch, o.in_c, o.h, o.w, o.weight, o.bias, o.kh, o.kw, o.stride, o.pad_top, o.pad_left, o.out_h, o.out_w, o.y);
          } else if constexpr (std::is_same_v<T, ChannelAffineOp>) {
            add(o.y, o.rows, o.cols, o.scale, o.shift, o.relu);
          } else if constexpr (std::is_same_v<T, MaxPoolOp>) {
            add(o.x, o.batch, o.h, o.w, o.c, o.kernel, o.stride, o.out_h, o.out_w, o.y);
          } else if constexpr (std::is_same_v<T, MeanRowsOp>) {
            add(o.x, o.batch, o.n, o.cols, o.y);
          } else if constexpr (std::is_same_v<T, FourierFeaturesOp>) {
            add(o.dims, o.bands, o.concat_pos, o.sine_only, o.out);
            for (int d = 0; d < o.dims && d < kMaxFourierDims; ++d) add(o.index_dims[d], o.max_resolution[d]);
          } else {
            static_assert(std::is_same_v<T, ScaleOp>, "every op has a signature");
            add(o.x, o.n, o.alpha);
          }
        },
        op);
    return s;
  }
  template <typename V>
  static uint64_t Bits(V v) {
    if constexpr (std::is_pointer_v<V>) {
      return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(v));
    } else if constexpr (std::is_same_v<V, float>) {
      uint32_t b;
      std::memcpy(&b, &v, sizeof(b));
      return b;
    } else {
      return static_cast<uint64_t>(v);
    }
  }

  // Runs what this call did so far eagerly (a replay or capture abandoned), and keeps its key
  // eager. Uploads of CopyFromHost re-copy from their staging (already written this call); ops
  // run whole again (their own uploads included); downloads queue their copies.
  void Recover() {
    if (entry_ != nullptr) {
      entry_->failed = true;
      DropGraph(*entry_);
    }
    std::vector<CallEvent> events = std::move(call_events_);
    call_events_.clear();
    mode_ = Mode::kEager;
    for (const CallEvent& e : events) {
      if (e.kind == Logged::kOp) {
        ExecOp(e.op.front());
      } else if (e.kind == Logged::kUpload) {
        CUDA_CHECK(cudaMemcpyAsync(e.device, e.staged, e.bytes, cudaMemcpyHostToDevice, stream_));
      } else if (e.kind == Logged::kDownload) {
        CUDA_CHECK(cudaMemcpyAsync(e.staged, e.device, e.bytes, cudaMemcpyDeviceToHost, stream_));
      }
    }
  }

  void AbortCapture() {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream_, &graph);
    if (graph != nullptr) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    pool_.Hold(nullptr);
    if (entry_ != nullptr) entry_->failed = true;
    mode_ = Mode::kEager;  // Recover() runs what was captured
  }

  void FinishCapture() {
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    pool_.Hold(nullptr);
    cudaGraphExec_t exec = nullptr;
    if (ended == cudaSuccess && graph != nullptr && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess) {
      cudaGraphDestroy(graph);
      entry_->exec = exec;
      CUDA_CHECK(cudaGraphLaunch(exec, stream_));  // the captured work has not run yet
      mode_ = Mode::kEager;
      return;
    }
    if (graph != nullptr) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    mode_ = Mode::kEager;
    Recover();
  }

  void DropGraph(GraphEntry& entry) {
    if (entry.exec != nullptr) {
      cudaStreamSynchronize(stream_);
      cudaGraphExecDestroy(entry.exec);
      entry.exec = nullptr;
    }
    for (const auto& [bytes, blocks] : entry.held) {
      for (void* p : blocks) pool_.Give(p, bytes);
    }
    entry.held.clear();
  }

  void ExecOp(const Op& op) {
    struct InOp {
      bool& flag;
      explicit InOp(bool& f) : flag(f) { flag = true; }
      ~InOp() { flag = false; }
    } in_op(in_op_);
    std::visit([&](const auto& o) { Exec(o); }, op);
  }

  void EndCallMode() {
    mode_ = Mode::kEager;
    entry_ = nullptr;
    cursor_ = 0;
    call_events_.clear();
  }

  // Events for the per-op profile, reused.
  cudaEvent_t TakeEvent() {
    if (!free_events_.empty()) {
      cudaEvent_t e = free_events_.back();
      free_events_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreate(&e));
    return e;
  }
  void CollectEventProfile() {
    for (const TimedOp& t : timed_ops_) {
      float ms = 0;
      if (cudaEventElapsedTime(&ms, t.start, t.end) == cudaSuccess) {
        EventStat& stat = event_stats_[t.label];
        stat.calls++;
        stat.ms += ms;
      }
      free_events_.push_back(t.start);
      free_events_.push_back(t.end);
    }
    timed_ops_.clear();
  }
  void PrintEventProfile() {
    if (!event_profile_ || event_stats_.empty()) return;
    double total = 0;
    for (const auto& [label, stat] : event_stats_) total += stat.ms;
    std::fprintf(stderr, "perceiver-io profile (%s, CUDA events, no per-op waits), %.3f ms in ops:\n", name().c_str(), total);
    std::vector<std::pair<std::string, EventStat>> sorted(event_stats_.begin(), event_stats_.end());
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
    for (const auto& [label, stat] : sorted) {
      std::fprintf(stderr, "  %-48s %8lld calls %10.3f ms %5.1f%%\n", label.c_str(), static_cast<long long>(stat.calls), stat.ms,
                   total > 0 ? 100.0 * stat.ms / total : 0.0);
    }
  }

  static void Contiguous(bool ok, const char* what) {
    if (!ok) throw EngineError(ErrorCode::kInternal, std::string("cuda backend: ") + what + " needs contiguous rows");
  }

  // y = epilogue(x W^T): the bias and (in place or not) the residual ride in the product's
  // epilogue (cuBLASLt: bias epilogue, residual as C with beta = 1), never as extra passes.
  void Exec(const LinearOp& op) {
    const int64_t rows = op.rows, out = op.weight->rows(), in = op.weight->cols();
    if (rows == 0 || out == 0) return;
    const float* bias = op.bias ? op.bias->values() : nullptr;
    if (op.residual == nullptr) {
      const bool gelu_done = Product(op.x, rows, in, op.ldx, *op.weight, out, op.y, op.ldy, bias, nullptr, 0, op.gelu);
      if (op.gelu && !gelu_done) {
        Contiguous(op.ldy == out, "linear with gelu");
        cuda::LaunchGelu(op.y, rows * out, stream_);
      }
      return;
    }
    Contiguous(op.ldy == out, "linear with a residual");
    const bool broadcast = op.residual_period != 0 && op.residual_period != rows;
    if (op.gelu) {  // gelu(x W^T + b) first, then the residual joins
      DeviceBuffer activated(pool_, static_cast<size_t>(rows * out));
      if (!Product(op.x, rows, in, op.ldx, *op.weight, out, activated.data(), out, bias, nullptr, 0, true)) {
        cuda::LaunchGelu(activated.data(), rows * out, stream_);
      }
      CopyResidual(op, rows, out);
      cuda::LaunchAddInPlace(op.y, activated.data(), rows * out, stream_);
      return;
    }
    if (!broadcast) {  // the residual is C: y = x W^T + b + residual in one product
      Product(op.x, rows, in, op.ldx, *op.weight, out, op.y, op.ldy, bias, op.residual, op.ld_residual, false);
      return;
    }
    CopyResidual(op, rows, out);  // a block of rows repeated over the batch: laid out in y first
    Product(op.x, rows, in, op.ldx, *op.weight, out, op.y, op.ldy, bias, op.y, op.ldy, false);
  }

  void CopyResidual(const LinearOp& op, int64_t rows, int64_t out) {
    if (op.residual == op.y && op.residual_period == 0 && op.ld_residual == op.ldy) return;
    const int64_t period = op.residual_period ? op.residual_period : rows;
    const int64_t shape[3] = {rows / period, period, out};
    const int64_t src[3] = {0, op.ld_residual, 1}, dst[3] = {period * out, out, 1};
    cuda::LaunchStridedCopy(op.y, dst, op.residual, src, shape, 3, stream_);
  }

  // The one-pass LayerNorm takes strides and the residual itself (no summed copy, no contiguity).
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

  // The key mask an attention op uploads: its own, or one made from per-item lengths (kept
  // across calls: no host allocation once it has the size); null without key padding.
  const uint8_t* AttentionHostMask(const AttentionOp& op) {
    if (op.key_lengths == nullptr) return op.key_mask;
    mask_from_lengths_.assign(static_cast<size_t>(op.batch * op.nk), 0);
    for (int64_t b = 0; b < op.batch; ++b) std::fill_n(mask_from_lengths_.begin() + b * op.nk, op.key_lengths[b], uint8_t{1});
    return mask_from_lengths_.data();
  }

  // Whether an attention op runs the tensor-core flash kernel (kernels/flash_attention_plan.h):
  // half-precision models, PERCEIVER_CUDA_ATTENTION unset or flash, no probabilities asked for,
  // and a tile shape that holds the head widths; the rest take the GEMM attention (or the fused
  // kernel). Decided from the op alone, so HostArrays and Exec agree on what an op uploads.
  bool UsesFlash(const AttentionOp& op) const {
    return attention_path_ == AttentionPath::kFlash && op.probs == nullptr && RoundsProductInputs(precision_) &&
           cuda::FlashAttentionSupports(op.dqk, op.dv);
  }

  // The flash kernel's per-item key lengths as int32, capped at nk (kept across calls: no host
  // allocation once it has the size); null without key lengths.
  const int32_t* FlashHostLengths(const AttentionOp& op) {
    if (op.key_lengths == nullptr) return nullptr;
    flash_lengths_.resize(static_cast<size_t>(op.batch));
    for (int64_t b = 0; b < op.batch; ++b) flash_lengths_[b] = static_cast<int32_t>(std::min<int64_t>(op.key_lengths[b], op.nk));
    return flash_lengths_.data();
  }

  void Exec(const AttentionOp& op) {
    if (UsesFlash(op)) {
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
    const uint8_t* host_mask = AttentionHostMask(op);
    if (host_mask != nullptr) {  // the mask comes in host memory
      const size_t bytes = static_cast<size_t>(op.batch * op.nk);
      mask = std::make_unique<DeviceBuffer>(pool_, (bytes + 3) / 4);
      Upload(mask->data(), host_mask, bytes);
      args.key_mask = reinterpret_cast<const uint8_t*>(mask->data());
    }
    if (args.probs != nullptr) cuda::LaunchAttentionProbs(args, stream_);
    if (attention_path_ == AttentionPath::kFused) {
      cuda::LaunchAttention(args, attention_max_shared_, stream_);
      return;
    }
    cuda::GemmAttentionContext context;
    context.blas = blas_;
    context.stream = stream_;
    context.precision = precision_;
    context.allocate = [this](size_t floats) -> std::unique_ptr<BackendBuffer> { return std::make_unique<DeviceBuffer>(pool_, floats); };
    if (score_budget_bytes_ > 0) context.score_budget_bytes = score_budget_bytes_;
    cuda::GemmAttention(args, context);
  }

  void Exec(const EmbeddingOp& op) {
    const size_t n = static_cast<size_t>(op.batch * op.seq);
    DeviceBuffer device_ids(pool_, n);  // int32 ids fit in float-sized slots
    Upload(device_ids.data(), op.ids, n * sizeof(int32_t));
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
    Upload(device_indices.data(), op.indices, op.count * sizeof(int64_t));
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

 public:
  // The tensor-core flash attention (half precision). Key lengths (int32) or the key mask go up
  // through pinned staging like every host array (Upload, in the order HostArrays lists them);
  // the split workspace and the device copies of lengths and mask are pool blocks like every
  // op's scratch, so a steady-state call allocates nothing and a CUDA graph can capture it.
  // force_splits > 0 fixes the key-range split (the kernel checks).
  void RunFlashAttention(const AttentionOp& op, DType dtype, int force_splits) {
    Bind();
    cuda::flash::Params p = cuda::FlashAttentionParams(op);
    std::unique_ptr<DeviceBuffer> lengths, mask, workspace;
    if (const int32_t* host_lengths = FlashHostLengths(op)) {
      const size_t n = static_cast<size_t>(op.batch);
      lengths = std::make_unique<DeviceBuffer>(pool_, n);  // int32 lengths fit in float-sized slots
      Upload(lengths->data(), host_lengths, n * sizeof(int32_t));
      p.key_lengths = reinterpret_cast<const int32_t*>(lengths->data());
    } else if (op.key_mask != nullptr) {
      const size_t bytes = static_cast<size_t>(op.batch * op.nk);
      mask = std::make_unique<DeviceBuffer>(pool_, (bytes + 3) / 4);
      Upload(mask->data(), op.key_mask, bytes);
      p.key_mask = reinterpret_cast<const uint8_t*>(mask->data());
    }
    const size_t floats = cuda::FlashAttentionWorkspaceFloats(p, force_splits);
    if (floats > 0) workspace = std::make_unique<DeviceBuffer>(pool_, floats);
    cuda::LaunchFlashAttention(p, dtype, workspace ? workspace->data() : nullptr, floats, force_splits, stream_);
  }

  // Whether `backend` is a CudaBackend alive now (the kernel-check hook below: no RTTI in this
  // build, so the live CUDA backends are known by address).
  static bool IsLive(const Backend* backend) {
    std::lock_guard<std::mutex> lock(LiveMutex());
    return std::find(Live().begin(), Live().end(), backend) != Live().end();
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

  // y[rows, out] = x[rows, in] @ w[out, in]^T (+ bias) (+ c) in the weight's dtype, accumulating
  // in float32; c (rows of ldc) may be y itself. Returns whether GELU was applied as well (the
  // tanh epilogue, only where lt_tanh_gelu_ allows it). cuBLAS is column-major: this is
  // y^T = w x^T, i.e. D(out x rows) = op_T(W: in x out) * X(in x rows).
  bool Product(const float* x, int64_t rows, int64_t in, int64_t ldx, const Weight& weight, int64_t out, float* y, int64_t ldy,
               const float* bias, const float* c, int64_t ldc, bool gelu) {
    const void* b = x;
    int64_t ldb = ldx;
    std::unique_ptr<DeviceBuffer> compact, converted;
    if (weight.dtype() != DType::kFloat32) {  // the activation rounded to the compute type, rows packed
      if (ldx != in) {
        compact = std::make_unique<DeviceBuffer>(pool_, static_cast<size_t>(rows * in));
        const int64_t shape[2] = {rows, in}, src[2] = {ldx, 1}, dst[2] = {in, 1};
        cuda::LaunchStridedCopy(compact->data(), dst, x, src, shape, 2, stream_);
        x = compact->data();
      }
      converted = std::make_unique<DeviceBuffer>(pool_, static_cast<size_t>((rows * in + 1) / 2));
      cuda::LaunchConvert(x, rows * in, weight.dtype() == DType::kBfloat16, converted->data(), stream_);
      b = converted->data();
      ldb = in;
    }
    const bool gelu_epilogue = gelu && lt_tanh_gelu_;
    if (lt_ != nullptr && LtProduct(b, ldb, weight, rows, in, out, y, ldy, bias, c, ldc, gelu_epilogue)) return gelu_epilogue;
    LegacyProduct(b, ldb, weight, rows, in, out, y, ldy, bias, c, ldc);
    return false;
  }

  // cuBLAS's GemmEx, where cuBLASLt is missing or has no algorithm for a shape: the bias and C
  // are laid into y first (y may alias c), then the product accumulates onto them.
  void LegacyProduct(const void* b, int64_t ldb, const Weight& weight, int64_t rows, int64_t in, int64_t out, float* y, int64_t ldy,
                     const float* bias, const float* c, int64_t ldc) {
    if (rows > INT32_MAX || in > INT32_MAX || out > INT32_MAX || ldb > INT32_MAX || ldy > INT32_MAX) {
      ThrowInvalidArgument("linear dimensions", "rows, in and out within cuBLAS's int range",
                           std::to_string(rows) + ", " + std::to_string(in) + ", " + std::to_string(out));
    }
    float beta = 0.0f;
    if (c != nullptr) {
      if (c != y || ldc != ldy) {
        const int64_t shape[2] = {rows, out}, src[2] = {ldc, 1}, dst[2] = {ldy, 1};
        cuda::LaunchStridedCopy(y, dst, c, src, shape, 2, stream_);
      }
      if (bias != nullptr) cuda::LaunchAddRowsBroadcast(y, bias, rows, out, 1, stream_);
      beta = 1.0f;
    } else if (bias != nullptr) {
      const int64_t shape[2] = {rows, out}, src[2] = {0, 1}, dst[2] = {ldy, 1};
      cuda::LaunchStridedCopy(y, dst, bias, src, shape, 2, stream_);
      beta = 1.0f;
    }
    const float alpha = 1.0f;
    const cuda::CublasLibrary& blas = Cublas();
    const int type = DataType(weight.dtype());
    const int compute = precision_ == Precision::kTfloat32 ? cuda::kCompute32FFastTF32 : cuda::kCompute32F;
    CUBLAS_CHECK(blas.GemmEx(blas_, cuda::kOpT, cuda::kOpN, static_cast<int>(out), static_cast<int>(rows), static_cast<int>(in), &alpha,
                             Dev(&weight).matrix(), type, static_cast<int>(in), b, type, static_cast<int>(ldb), &beta, y, cuda::kR32F,
                             static_cast<int>(ldy), compute, cuda::kGemmDefault));
  }

  static int DataType(DType dtype) {
    return dtype == DType::kBfloat16 ? cuda::kR16BF : dtype == DType::kFloat16 ? cuda::kR16F : cuda::kR32F;
  }

  // The largest power of two (up to 256) dividing an address and a leading dimension in bytes:
  // what cuBLASLt's algorithms may assume of a matrix (its preference's minimum alignment).
  static uint32_t Alignment(const void* p, int64_t ld_bytes) {
    const uint64_t v = reinterpret_cast<uintptr_t>(p) | static_cast<uint64_t>(ld_bytes) | 256;
    return static_cast<uint32_t>(v & (~v + 1));
  }

  // One product shape's cuBLASLt descriptors and chosen algorithm.
  using LtKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, uint32_t, uint32_t>;
  struct LtPlan {
    cuda::lt::MatmulDesc desc = nullptr;
    cuda::lt::MatrixLayout a = nullptr, b = nullptr, c = nullptr, d = nullptr;
    cuda::lt::MatmulAlgo algo{};
    size_t workspace = 0;
    bool usable = false;
  };

  void DestroyLtPlan(LtPlan& plan) {
    if (plan.desc != nullptr) lt_->MatmulDescDestroy(plan.desc);
    for (cuda::lt::MatrixLayout l : {plan.a, plan.b, plan.c, plan.d}) {
      if (l != nullptr) lt_->MatrixLayoutDestroy(l);
    }
  }

  // False when cuBLASLt has no algorithm for the shape (the caller falls back to GemmEx).
  bool LtProduct(const void* b, int64_t ldb, const Weight& weight, int64_t rows, int64_t in, int64_t out, float* y, int64_t ldy,
                 const float* bias, const float* c, int64_t ldc, bool gelu) {
    namespace lt = cuda::lt;
    const void* w = Dev(&weight).matrix();
    const int type = DataType(weight.dtype());
    const size_t elem = weight.dtype() == DType::kFloat32 ? 4 : 2;
    const uint32_t epilogue = bias != nullptr ? (gelu ? lt::kEpilogueGeluBias : lt::kEpilogueBias) : (gelu ? lt::kEpilogueGelu : lt::kEpilogueDefault);
    // The alignments of A, B, C and D, 8 bits each (log2), decide which algorithms are valid.
    auto log2 = [](uint32_t a) { uint32_t n = 0; while ((1u << n) < a) ++n; return n; };
    const uint32_t align_a = Alignment(w, in * static_cast<int64_t>(elem)), align_b = Alignment(b, ldb * static_cast<int64_t>(elem));
    const uint32_t align_c = c != nullptr ? Alignment(c, ldc * 4) : 256, align_d = Alignment(y, ldy * 4);
    const uint32_t alignments = log2(align_a) | log2(align_b) << 8 | log2(align_c) << 16 | log2(align_d) << 24;
    const int c_kind = c == nullptr ? 0 : c == y && ldc == ldy ? 1 : 2;
    const LtKey key{rows, in, out, ldb, ldy, c_kind == 2 ? ldc : 0, type, c_kind, epilogue, alignments};
    auto found = lt_plans_.find(key);
    if (found == lt_plans_.end()) found = lt_plans_.emplace(key, PlanLt(key, w, b, y, c, bias, align_a, align_b, align_c, align_d)).first;
    LtPlan& plan = found->second;
    if (!plan.usable) return false;
    if (bias != nullptr) CUBLAS_CHECK(lt_->MatmulDescSetAttribute(plan.desc, lt::kDescBiasPointer, &bias, sizeof(bias)));
    const float alpha = 1.0f, beta = c != nullptr ? 1.0f : 0.0f;
    CUBLAS_CHECK(lt_->Matmul(lt_handle_, plan.desc, &alpha, w, plan.a, b, plan.b, &beta, c != nullptr ? c : y, plan.c, y, plan.d, &plan.algo,
                             lt_workspace_, plan.workspace, stream_));
    return true;
  }

  // Descriptors, then the heuristic's candidates; with tuning, the fastest of the first few,
  // timed on this stream at the shape's first use (a warm-up call; its waits are counted).
  LtPlan PlanLt(const LtKey& key, const void* w, const void* b, float* y, const float* c, const float* bias, uint32_t align_a,
                uint32_t align_b, uint32_t align_c, uint32_t align_d) {
    namespace lt = cuda::lt;
    const auto [rows, in, out, ldb, ldy, ldc_other, type, c_kind, epilogue, alignments] = key;
    (void)alignments;
    LtPlan plan;
    const int compute = precision_ == Precision::kTfloat32 ? cuda::kCompute32FFastTF32 : cuda::kCompute32F;
    CUBLAS_CHECK(lt_->MatmulDescCreate(&plan.desc, compute, cuda::kR32F));
    const int32_t transa = cuda::kOpT, transb = cuda::kOpN;
    CUBLAS_CHECK(lt_->MatmulDescSetAttribute(plan.desc, lt::kDescTransA, &transa, sizeof(transa)));
    CUBLAS_CHECK(lt_->MatmulDescSetAttribute(plan.desc, lt::kDescTransB, &transb, sizeof(transb)));
    CUBLAS_CHECK(lt_->MatmulDescSetAttribute(plan.desc, lt::kDescEpilogue, &epilogue, sizeof(epilogue)));
    // The heuristic reads the bias pointer's alignment; the timing runs read the bias itself.
    if (bias != nullptr) CUBLAS_CHECK(lt_->MatmulDescSetAttribute(plan.desc, lt::kDescBiasPointer, &bias, sizeof(bias)));
    CUBLAS_CHECK(lt_->MatrixLayoutCreate(&plan.a, type, static_cast<uint64_t>(in), static_cast<uint64_t>(out), in));
    CUBLAS_CHECK(lt_->MatrixLayoutCreate(&plan.b, type, static_cast<uint64_t>(in), static_cast<uint64_t>(rows), ldb));
    CUBLAS_CHECK(lt_->MatrixLayoutCreate(&plan.d, cuda::kR32F, static_cast<uint64_t>(out), static_cast<uint64_t>(rows), ldy));
    CUBLAS_CHECK(lt_->MatrixLayoutCreate(&plan.c, cuda::kR32F, static_cast<uint64_t>(out), static_cast<uint64_t>(rows),
                                         c_kind == 2 ? ldc_other : ldy));
    lt::Preference preference = nullptr;
    CUBLAS_CHECK(lt_->PreferenceCreate(&preference));
    const uint64_t workspace = kLtWorkspaceBytes;
    lt_->PreferenceSetAttribute(preference, lt::kPrefMaxWorkspaceBytes, &workspace, sizeof(workspace));
    lt_->PreferenceSetAttribute(preference, lt::kPrefMinAlignmentA, &align_a, sizeof(align_a));
    lt_->PreferenceSetAttribute(preference, lt::kPrefMinAlignmentB, &align_b, sizeof(align_b));
    lt_->PreferenceSetAttribute(preference, lt::kPrefMinAlignmentC, &align_c, sizeof(align_c));
    lt_->PreferenceSetAttribute(preference, lt::kPrefMinAlignmentD, &align_d, sizeof(align_d));
    lt::HeuristicResult results[8] = {};
    int returned = 0;
    const int status = lt_->AlgoGetHeuristic(lt_handle_, plan.desc, plan.a, plan.b, plan.c, plan.d, preference, 8, results, &returned);
    lt_->PreferenceDestroy(preference);
    if (status != 0 || returned == 0) return plan;  // not usable: GemmEx serves this shape
    int best = 0;
    if (tune_ && returned > 1) best = FastestLtAlgo(plan, results, std::min(returned, 4), w, b, y, c, c_kind, rows, out, ldy);
    if (best < 0) return plan;
    plan.algo = results[best].algo;
    plan.workspace = results[best].workspace_size;
    plan.usable = true;
    return plan;
  }

  // Times `count` candidates (3 runs each after one warm run) and returns the fastest's index, or
  // -1 if none ran. An in-place residual (C = D) is timed into scratch so y is not accumulated
  // twice; elsewhere D is rewritten with the same values each run.
  int FastestLtAlgo(const LtPlan& plan, const cuda::lt::HeuristicResult* results, int count, const void* w, const void* b, float* y,
                    const float* c, int c_kind, int64_t rows, int64_t out, int64_t ldy) {
    std::unique_ptr<DeviceBuffer> scratch;
    float* d = y;
    if (c_kind == 1) {
      scratch = std::make_unique<DeviceBuffer>(pool_, static_cast<size_t>(rows * ldy));
      d = scratch->data();
    }
    const float alpha = 1.0f, beta = c != nullptr ? 1.0f : 0.0f;
    cudaEvent_t start = nullptr, end = nullptr;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&end));
    int best = -1;
    float best_ms = 0;
    for (int i = 0; i < count; ++i) {
      if (results[i].state != 0 || results[i].workspace_size > kLtWorkspaceBytes) continue;
      auto run = [&] {
        return lt_->Matmul(lt_handle_, plan.desc, &alpha, w, plan.a, b, plan.b, &beta, c != nullptr ? c : y, plan.c, d, plan.d,
                           &results[i].algo, lt_workspace_, results[i].workspace_size, stream_);
      };
      if (run() != 0) continue;
      CUDA_CHECK(cudaEventRecord(start, stream_));
      bool ok = true;
      for (int r = 0; r < 3 && ok; ++r) ok = run() == 0;
      CUDA_CHECK(cudaEventRecord(end, stream_));
      ++syncs_;
      CUDA_CHECK(cudaEventSynchronize(end));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, start, end));
      if (ok && (best < 0 || ms < best_ms)) {
        best = i;
        best_ms = ms;
      }
    }
    cudaEventDestroy(start);
    cudaEventDestroy(end);
    return best;
  }

  int device_;
  Precision precision_;
  cudaStream_t stream_ = nullptr;
  cuda::cublasHandle_t blas_ = nullptr;
  // What happened inside (InternalCounts), before the pool that counts into it.
  std::atomic<int64_t> allocations_{0}, syncs_{0}, pageable_copies_{0};
  DevicePool pool_{&allocations_};
  PinnedStaging staging_{&allocations_};
  std::vector<Deferred> deferred_;
  std::vector<uint8_t> mask_from_lengths_;
  std::vector<int32_t> flash_lengths_;
  // CUDA graphs (see Mode).
  bool graphs_enabled_ = false;
  Mode mode_ = Mode::kEager;
  GraphEntry* entry_ = nullptr;
  size_t cursor_ = 0;
  std::vector<CallEvent> call_events_;
  std::map<std::string, GraphEntry> graphs_;
  bool in_op_ = false;  // inside an op's Exec: its uploads are the op's own
  // Read once from the environment (constructor).
  AttentionPath attention_path_ = AttentionPath::kFlash;
  int attention_max_shared_ = 0;  // the fused kernel's opt-in shared memory per block (bytes)
  size_t score_budget_bytes_ = 0;
  bool tune_ = true;
  bool lt_tanh_gelu_ = false;
  // cuBLASLt: null when not loadable (lt_missing_ says why) or PERCEIVER_NO_CUBLASLT=1.
  const cuda::lt::Library* lt_ = nullptr;
  std::string lt_missing_;
  cuda::lt::Handle lt_handle_ = nullptr;
  void* lt_workspace_ = nullptr;
  std::map<LtKey, LtPlan> lt_plans_;
  // PERCEIVER_PROFILE=events.
  struct TimedOp {
    std::string label;
    cudaEvent_t start, end;
  };
  struct EventStat {
    int64_t calls = 0;
    double ms = 0;
  };
  bool event_profile_ = false;
  std::vector<TimedOp> timed_ops_;
  std::vector<cudaEvent_t> free_events_;
  std::map<std::string, EventStat> event_stats_;
};

}  // namespace

// Kernel-check hook (kernel_check_hooks.h).
void cuda_checks::FlashAttention(Backend& backend, const AttentionOp& op, DType dtype, int force_splits) {
  // No RTTI in this build (node-gyp's -fno-rtti): the live CUDA backends are known by address.
  if (!CudaBackend::IsLive(&backend)) {
    ThrowInvalidArgument("backend", "a CUDA backend from CreateCudaBackend (the flash attention check)", backend.name());
  }
  auto& cuda = static_cast<CudaBackend&>(backend);
  cuda.RunFlashAttention(op, dtype, force_splits);
  cuda.Synchronize();
}

std::unique_ptr<Backend> CreateCudaBackend(int device, Precision precision) {
  const CudaStatus status = ProbeCuda();
  if (!status.available) throw EngineError(ErrorCode::kBackendUnavailable, status.reason);
  if (device < 0 || device >= status.device_count) {
    ThrowInvalidArgument("device", "one of the " + std::to_string(status.device_count) + " CUDA device(s) of this machine", "cuda:" + std::to_string(device));
  }
  return std::make_unique<CudaBackend>(device, precision);
}

}  // namespace perceiver
