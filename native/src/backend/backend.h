// The one interface every compute backend implements (CPU and CUDA). The Perceiver graph
// (model/perceiver_graph.cc) is written once against it.
//
// Version 2: typed data and one op signature.
// - Weights are loaded once into memory the backend owns (LoadWeight), and come back as a typed
//   Weight: dtype, shape and how the backend keeps it. Nothing points into the caller's memory
//   after LoadWeight returns, so JavaScript may detach or free what it passed.
// - Activations are float32 views of backend memory with a row stride (ld) and, where an op
//   takes batched operands, a batch stride; a view of a fused QKV buffer is its columns.
// - Every compute op is one struct in the Op variant, run through the one virtual Run(). A
//   decorator (the profiler, a call counter) forwards Run and LoadWeight whole, so it cannot drop
//   an op, an argument or a dtype; there are no default implementations to forget to override.
//
// Layouts are row-major; weight matrices are PyTorch's [out_features, in_features].
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "core/engine_error.h"

namespace perceiver {

// Element types a backend stores. Activations are float32 in memory; a product may round its
// inputs to the model's compute dtype (see RoundsProductInputs).
enum class DType : uint8_t { kFloat32, kBfloat16, kFloat16 };
const char* DTypeName(DType dtype);

// The model's compute precision: what matrix products take their operands in. Activations,
// LayerNorm, softmax and every accumulation stay float32.
enum class Precision { kFloat32, kTfloat32, kFloat16, kBfloat16 };

// The one definition of where a reduced precision rounds, shared by every backend: the weight
// matrices of products (Linear, Conv2d) are stored in the precision's 16-bit type and each
// product's activation input is rounded to it; products accumulate in float32 and write float32;
// everything else (LayerNorm, softmax, GELU, residuals, attention's products) is float32.
inline bool RoundsProductInputs(Precision p) { return p == Precision::kFloat16 || p == Precision::kBfloat16; }
inline DType ProductDType(Precision p) {
  return p == Precision::kBfloat16 ? DType::kBfloat16 : p == Precision::kFloat16 ? DType::kFloat16 : DType::kFloat32;
}

// A block of backend memory owned by its holder (RAII); released through the backend that made it.
class BackendBuffer {
 public:
  virtual ~BackendBuffer() = default;
  virtual float* data() = 0;
  virtual size_t size() const = 0;  // in floats
};

// How a weight is read.
enum class WeightUse {
  kMatrix,  // only by products (LinearOp, Conv2dOp): the backend picks its layout and dtype
  kValues,  // element-wise, as float32 [rows, cols] row-major (biases, LayerNorm, tables, padding)
};

// A weight in backend memory, owned by the backend's Weight object.
class Weight {
 public:
  virtual ~Weight() = default;
  virtual DType dtype() const = 0;  // what the backend stores it in
  virtual int64_t rows() const = 0;
  virtual int64_t cols() const = 0;
  virtual WeightUse use() const = 0;
  // kValues weights: float32 values in backend memory. kMatrix weights: null (products only).
  virtual const float* values() const = 0;
  // The backend's own weight object (a weight loaded later, on a worker thread, forwards to it).
  virtual const Weight& resolved() const { return *this; }
};
using WeightRef = std::shared_ptr<const Weight>;

// A weight as the loader hands it over: float32 host values, [rows, cols] row-major, named for
// error messages. Read only during LoadWeight.
struct HostWeight {
  const float* data = nullptr;
  int64_t rows = 0, cols = 0;
  std::string name;
};

// Throws an invalid-argument EngineError naming the weight and the first non-finite value's
// index. (The CPU backend checks while it copies; this is the separate pass for the others.)
void CheckFinite(const HostWeight& weight);
// The error both throw: an invalid argument naming the weight, the value and its index.
[[noreturn]] void ThrowNonFiniteWeight(const HostWeight& weight, int64_t index);

// Rows of a float32 matrix in backend memory: row r of batch item b starts at
// data + b * batch_stride + r * ld. batch_stride 0 shares one block across the batch.
struct RowsView {
  const float* data = nullptr;
  int64_t ld = 0;
  int64_t batch_stride = 0;
};

// y[rows, out] = epilogue(x[rows, in] @ W^T): bias, then exact-erf GELU, then + residual,
// stored as y_dtype (float32 now; the field is there so a backend that writes 16-bit activations
// is told, never guesses). residual row r is residual + (residual_period ? r % residual_period : r)
// * ld_residual: a period broadcasts one block of rows (batch-independent queries) over the batch.
// residual may alias y (same ld).
struct LinearOp {
  const float* x = nullptr;
  int64_t rows = 0, ldx = 0;
  const Weight* weight = nullptr;  // kMatrix [out, in]
  const Weight* bias = nullptr;    // kValues [1, out] or null
  bool gelu = false;
  const float* residual = nullptr;
  int64_t ld_residual = 0, residual_period = 0;
  float* y = nullptr;
  int64_t ldy = 0;
  DType y_dtype = DType::kFloat32;
};

// y = LayerNorm(x (+ residual)) over the last dimension: (v - mean) / sqrt(var + eps) * gamma +
// beta. y may alias x (same ld).
struct LayerNormOp {
  const float* x = nullptr;
  int64_t rows = 0, dim = 0, ldx = 0;
  const float* residual = nullptr;  // [rows, dim] with ld_residual, or null
  int64_t ld_residual = 0;
  const Weight* gamma = nullptr;  // kValues [1, dim]
  const Weight* beta = nullptr;   // kValues [1, dim]
  float eps = 1e-5f;
  float* y = nullptr;
  int64_t ldy = 0;
  DType y_dtype = DType::kFloat32;
};

// Scaled dot-product attention. Head h of a query row reads columns [h*dqk, (h+1)*dqk) of q (and
// likewise of k; v's heads are dv wide), so q, k and v may be column blocks of one fused QKV / KV
// buffer (their ld is the fused width):
//   out[b, i, h*dv:(h+1)*dv] = softmax_j(scale * q[b,i,h] . k[b,j,h]) @ v[b, :, h]
// Key padding comes either as per-item lengths (keys [0, key_lengths[b]) attend: the form a
// padded batch's mask has, and the cheaper one) or as a general mask ([batch, nk], 1 = attend);
// both in host memory, validated by the caller (every item keeps at least one key).
struct AttentionOp {
  int64_t batch = 0, heads = 0, nq = 0, nk = 0, dqk = 0, dv = 0;
  RowsView q, k, v;
  const int64_t* key_lengths = nullptr;
  const uint8_t* key_mask = nullptr;
  float scale = 1.0f;
  float* out = nullptr;    // [batch, nq, heads * dv], contiguous
  float* probs = nullptr;  // optional [batch, heads, nq, nk]: the attention weights, when asked for
};

// out[b, t, :] = table[ids[b, t], :] + positions[t, :] (positions may be null); ids in host
// memory, validated by the caller.
struct EmbeddingOp {
  const int32_t* ids = nullptr;
  int64_t batch = 0, seq = 0;
  const Weight* table = nullptr;      // kValues [vocab, dim]
  const Weight* positions = nullptr;  // kValues [max_positions, dim] or null
  float* out = nullptr;
};

constexpr int kMaxCopyRank = 8;

// An N-D strided copy (rank <= kMaxCopyRank): for every index i of shape,
// dst[sum i_d * dst_strides[d]] = src[sum i_d * src_strides[d]]. Strides are in floats and may
// be 0 on the source (broadcast). Permutes, space-to-depth, subsampling, concatenation and
// broadcasting are all this one op; a plain copy is rank 1.
struct CopyOp {
  float* dst = nullptr;
  const float* src = nullptr;
  int rank = 1;
  int64_t shape[kMaxCopyRank] = {};
  int64_t dst_strides[kMaxCopyRank] = {};
  int64_t src_strides[kMaxCopyRank] = {};
};

// y[rows, cols] += x[r % period, :]: adds position encodings shared by every batch item.
struct AddRowsOp {
  float* y = nullptr;
  const float* x = nullptr;
  int64_t rows = 0, cols = 0, period = 0;
};

// dst[b, i, :] = src[b, indices[i], :] for b < batch, i < count; indices in host memory, validated.
struct GatherRowsOp {
  float* dst = nullptr;
  const float* src = nullptr;
  const int64_t* indices = nullptr;
  int64_t count = 0, batch = 0, src_rows = 0, cols = 0;
};

// 2-D convolution of x [batch, in_c, h, w] (NCHW) by weight [out_c, in_c * kh * kw] with zero
// padding (top, left; bottom/right implied by out_h/out_w), written channels-last:
// y [batch, out_h, out_w, out_c].
struct Conv2dOp {
  const float* x = nullptr;
  int64_t batch = 0, in_c = 0, h = 0, w = 0;
  const Weight* weight = nullptr;  // kMatrix [out_c, in_c * kh * kw]
  const Weight* bias = nullptr;    // kValues [1, out_c] or null
  int64_t kh = 0, kw = 0, stride = 1, pad_top = 0, pad_left = 0, out_h = 0, out_w = 0;
  float* y = nullptr;
};

// y[r, c] = y[r, c] * scale[c] + shift[c], then max(0, .) when relu (inference BatchNorm + ReLU).
struct ChannelAffineOp {
  float* y = nullptr;
  int64_t rows = 0, cols = 0;
  const Weight* scale = nullptr;  // kValues [1, cols]
  const Weight* shift = nullptr;  // kValues [1, cols]
  bool relu = false;
};

// Max pooling without padding on channels-last x [batch, h, w, c] -> y [batch, out_h, out_w, c].
struct MaxPoolOp {
  const float* x = nullptr;
  int64_t batch = 0, h = 0, w = 0, c = 0, kernel = 0, stride = 0, out_h = 0, out_w = 0;
  float* y = nullptr;
};

// y[b, :] = mean over n of x[b, n, :].
struct MeanRowsOp {
  const float* x = nullptr;
  int64_t batch = 0, n = 0, cols = 0;
  float* y = nullptr;
};

// Fourier position features of the linspace grid over index_dims: transformers'
// generate_fourier_features of build_linear_positions in float32 (core/fourier_features.h
// FourierFeatures over GridPositions is the definition), out [prod(index_dims), channels] with
// the positions first when concat_pos, then the sines, then (unless sine_only) the cosines. An op
// so the features are made where they are used: a 1920x1080 flow pair's grid is 2 million rows.
constexpr int kMaxFourierDims = 4;
struct FourierFeaturesOp {
  int dims = 0;
  int64_t index_dims[kMaxFourierDims] = {};
  int64_t max_resolution[kMaxFourierDims] = {};
  int64_t bands = 0;
  bool concat_pos = true, sine_only = false;
  float* out = nullptr;
};

// x *= alpha.
struct ScaleOp {
  float* x = nullptr;
  int64_t n = 0;
  float alpha = 1.0f;
};

using Op = std::variant<LinearOp, LayerNormOp, AttentionOp, EmbeddingOp, CopyOp, AddRowsOp, GatherRowsOp, Conv2dOp,
                        ChannelAffineOp, MaxPoolOp, MeanRowsOp, FourierFeaturesOp, ScaleOp>;
// A short name with the op's sizes, for profiles and errors ("linear 512x768->768 +gelu").
std::string OpLabel(const Op& op);

// A device fault that poisons the device for the rest of the process (CUDA's sticky errors: an
// illegal address, a kernel assertion, an uncorrectable ECC error). The graph marks its model
// unusable when one escapes a call (perceiver_graph.cc), so later calls say so instead of failing
// each with a fresh, confusing CUDA error.
class DeviceFault : public EngineError {
 public:
  explicit DeviceFault(const std::string& message) : EngineError(ErrorCode::kInternal, message) {}
};

// What a steady-state call must not do, as a backend does it internally (inside its ops and
// copies): real device or pinned allocations (not a cache hit), host waits on the device, copies
// from or to pageable host memory. The counting decorator (counting_backend.cc) adds these to
// what it sees at the interface.
struct RuntimeCounts {
  int64_t allocations = 0, syncs = 0, pageable_copies = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // where its memory lives: "cpu" or "cuda:N"
  virtual Precision precision() const = 0;
  // True when calls must not overlap (one stream per model): the graph then runs one call at a time.
  virtual bool serializes_calls() const = 0;

  // Memory.
  virtual std::unique_ptr<BackendBuffer> Allocate(size_t floats) = 0;
  // Copies (and for kMatrix, may convert and repack) a weight into backend-owned memory. Throws
  // an invalid-argument EngineError naming the weight if a value is not finite.
  virtual WeightRef LoadWeight(const HostWeight& host, WeightUse use) = 0;
  virtual void CopyToHost(float* dst, const float* src, size_t floats) = 0;
  virtual void CopyFromHost(float* dst, const float* src, size_t floats) = 0;
  // A copy to the host that completes by the next Synchronize() (dst is not read or written by
  // the caller before then): a call queues every output and waits once. The default is the
  // blocking copy; the CUDA backend stages through pinned memory.
  virtual void CopyToHostDeferred(float* dst, const float* src, size_t floats) { CopyToHost(dst, src, floats); }
  // Forgets the deferred copies no Synchronize() has completed (a failed call: their
  // destinations are being freed). The device may still write the backend's own staging.
  virtual void CancelDeferred() {}
  // Waits until queued work is finished (a no-op on the CPU).
  virtual void Synchronize() = 0;
  // A call of the model begins: `key` names what decides its ops (shapes and options, the same
  // key as the arena's), and the call ends at its Synchronize (or CancelDeferred when it fails).
  // `replayable`: a small call whose ops a backend may record once and replay (CUDA graphs).
  virtual void BeginCall(const std::string& key, bool replayable) {}
  // Frees memory the backend caches for reuse and nothing holds (the arena calls it once it has
  // planned a shape: the blocks of the recorded call are not needed again).
  virtual void ReleaseCachedMemory() {}

  // Compute: every op, one signature.
  virtual void Run(const Op& op) = 0;

  // Diagnostics: what the backend did internally (see RuntimeCounts); zeros where nothing can
  // happen (the CPU backend's memory is the host's and it never waits).
  virtual RuntimeCounts InternalCounts() const { return {}; }
};

// A plain contiguous copy within backend memory, as a CopyOp.
CopyOp ContiguousCopy(float* dst, const float* src, size_t floats);

// The CPU backend (its own packed-weight products, a thread pool for the rest).
std::unique_ptr<Backend> CreateCpuBackend(Precision precision = Precision::kFloat32);

// Whether this build has the CUDA backend and whether it can run here; reason says why not.
struct CudaStatus {
  bool compiled = false;
  bool available = false;
  std::string reason;
  int device_count = 0;
  std::vector<std::string> devices;  // "NVIDIA H200 (sm_90, 139 GiB)"
  std::string cublas;                // the cuBLAS library loaded, when available
  std::string cublaslt;              // the cuBLASLt library loaded, or why not (products then use cuBLAS)
  int runtime_version = 0;           // the CUDA runtime linked in (cudaRuntimeGetVersion: 1000*major + 10*minor), 0 without CUDA
  int driver_version = 0;            // the CUDA version the driver supports (cudaDriverGetVersion), 0 without a driver
};
CudaStatus ProbeCuda();
// Free and total memory of a CUDA device in bytes (both 0 when CUDA cannot run).
void CudaMemoryInfo(int device, size_t* free_bytes, size_t* total_bytes);

// The CUDA backend on device `device`; throws a backend-unavailable EngineError saying what to
// install or set when it cannot run.
std::unique_ptr<Backend> CreateCudaBackend(int device, Precision precision);

// Wraps `backend` in the counting decorator when PERCEIVER_COUNT_RUNTIME=1 (read once, at load):
// allocations, syncs and pageable copies per call, and a test hook that injects a device fault
// (counting_backend.cc). Totals over every counted backend of the process:
struct RuntimeCounters {
  // Calls through the Backend interface: Allocate; Synchronize and the blocking CopyToHost;
  // host copies of any kind (CopyToHost, CopyToHostDeferred, CopyFromHost); ops run.
  int64_t allocations = 0, syncs = 0, host_copies = 0, runs = 0;
  RuntimeCounts internal;  // what the backends did inside (Backend::InternalCounts)
};
std::unique_ptr<Backend> WithCountingIfRequested(std::unique_ptr<Backend> backend);
std::unique_ptr<Backend> WithCounting(std::unique_ptr<Backend> backend);
RuntimeCounters CountedTotals();
// The next op run by a counted backend throws a DeviceFault (the sticky-error test's hook).
void InjectDeviceFault();

// Wraps `backend` in a per-op timer when PERCEIVER_PROFILE=1 (see profiling_backend.cc).
std::unique_ptr<Backend> WithProfilingIfRequested(std::unique_ptr<Backend> backend);
// The same decorator, unconditionally (the decorator test runs with and without it).
std::unique_ptr<Backend> WithProfiling(std::unique_ptr<Backend> backend, bool print_summary);

// The contiguous form the CUDA attention kernels take: [batch, rows, heads * width] projections.
struct AttentionArgs {
  int64_t batch = 0, heads = 0, nq = 0, nk = 0, dqk = 0, dv = 0;
  const float* q = nullptr;  // [batch, nq, heads * dqk]
  const float* k = nullptr;  // [batch, nk, heads * dqk]
  const float* v = nullptr;  // [batch, nk, heads * dv]
  const uint8_t* key_mask = nullptr;  // [batch, nk], in the kernel's memory
  float scale = 1.0f;
  float* out = nullptr;
  float* probs = nullptr;
};

}  // namespace perceiver
