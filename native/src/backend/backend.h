// The one interface every compute backend implements (CPU now; CUDA is the next implementation).
// The Perceiver graph (model/perceiver_graph.cc) is written once against it.
//
// Pointers passed to a backend live in that backend's memory space (host memory for the CPU
// backend, device memory for a GPU backend). All activations are float32; the layout of every
// matrix is row-major, and weight matrices are PyTorch's [out_features, in_features].
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace perceiver {

// A block of backend memory owned by its holder (RAII); released through the backend that made it.
class BackendBuffer {
 public:
  virtual ~BackendBuffer() = default;
  virtual float* data() = 0;
  virtual size_t size() const = 0;  // in floats
};

// Scaled dot-product attention over [batch, rows, heads * width] projections:
//   out[b, i, h*dv:(h+1)*dv] = softmax_j(scale * q[b,i,h] . k[b,j,h] + mask) @ v[b, :, h]
// Query/key head width (dqk) may differ from value head width (dv), as in the language model.
// key_mask (optional, [batch, nk], 1 = attend, 0 = padding; in host memory, like token ids)
// removes padded keys; every row must keep at least one key (the caller validates that).
struct AttentionArgs {
  int64_t batch = 0, heads = 0, nq = 0, nk = 0, dqk = 0, dv = 0;
  const float* q = nullptr;  // [batch, nq, heads * dqk]
  const float* k = nullptr;  // [batch, nk, heads * dqk]
  const float* v = nullptr;  // [batch, nk, heads * dv]
  const uint8_t* key_mask = nullptr;
  float scale = 1.0f;
  float* out = nullptr;    // [batch, nq, heads * dv]
  float* probs = nullptr;  // optional [batch, heads, nq, nk]: the attention weights, when asked for
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // Memory.
  virtual std::unique_ptr<BackendBuffer> Allocate(size_t floats) = 0;
  // Makes host weights usable by the backend. The CPU backend uses them in place (no copy); a GPU
  // backend uploads them once. The returned pointer stays valid for the backend's lifetime while
  // the host memory does.
  virtual const float* Weight(const float* host, size_t floats) = 0;
  // The same for a matrix that only Linear and Conv2d read ([rows, cols], row-major). The backend
  // may keep it in its compute precision (float16 / bfloat16 on a GPU), so the returned handle
  // is opaque: pass it to Linear / Conv2d only.
  virtual const float* MatrixWeight(const float* host, int64_t rows, int64_t cols) {
    return Weight(host, static_cast<size_t>(rows * cols));
  }
  // True when calls must not overlap (one stream per model): the graph then runs one call at a time.
  virtual bool serializes_calls() const { return false; }
  virtual void CopyToHost(float* dst, const float* src, size_t floats) = 0;
  virtual void CopyFromHost(float* dst, const float* src, size_t floats) = 0;
  virtual void Copy(float* dst, const float* src, size_t floats) = 0;
  // Waits until queued work is finished (a no-op on the CPU).
  virtual void Synchronize() = 0;

  // y[rows, out] = x[rows, in] @ w[out, in]^T + bias[out] (bias may be null).
  virtual void Linear(const float* x, int64_t rows, int64_t in, const float* w, const float* bias, int64_t out,
                      float* y) = 0;
  // y = (x - mean) / sqrt(var + eps) * gamma + beta over the last dimension (y may alias x).
  virtual void LayerNorm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps,
                         float* y) = 0;
  // In place, exact (erf) GELU.
  virtual void Gelu(float* x, int64_t n) = 0;
  // y += x, element-wise.
  virtual void AddInPlace(float* y, const float* x, int64_t n) = 0;
  virtual void Attention(const AttentionArgs& args) = 0;
  // out[b, t, :] = table[ids[b, t], :] + positions[t, :] (positions may be null).
  // ids live in host memory and are validated by the caller.
  virtual void EmbeddingLookup(const int32_t* ids, int64_t batch, int64_t seq, const float* table, int64_t vocab,
                               const float* positions, int64_t dim, float* out) = 0;

  // An N-D strided copy (rank <= kMaxCopyRank): for every index i of `shape`,
  // dst[sum i_d * dst_strides[d]] = src[sum i_d * src_strides[d]]. Strides are in floats and may
  // be 0 on the source (broadcast). Permutes, space-to-depth, subsampling, concatenation and
  // broadcasting are all this one op.
  virtual void StridedCopy(float* dst, const int64_t* dst_strides, const float* src, const int64_t* src_strides,
                           const int64_t* shape, int rank) = 0;
  // y[rows, C] += x[r % period, C]: adds position encodings shared by every batch item.
  virtual void AddRowsBroadcast(float* y, const float* x, int64_t rows, int64_t cols, int64_t period) = 0;
  // dst[b, i, :] = src[b, indices[i], :] for b < batch, i < count; indices in host memory, validated.
  virtual void GatherRows(float* dst, const float* src, const int64_t* indices, int64_t count, int64_t batch,
                          int64_t src_rows, int64_t cols) = 0;
  // 2-D convolution of x [batch, in_c, h, w] (NCHW, PyTorch's layout) by w [out_c, in_c, kh, kw]
  // with zero padding (top, left; bottom/right implied by out_h/out_w), written channels-last:
  // y [batch, out_h, out_w, out_c]. bias may be null.
  virtual void Conv2d(const float* x, int64_t batch, int64_t in_c, int64_t h, int64_t w, const float* weight,
                      const float* bias, int64_t out_c, int64_t kh, int64_t kw, int64_t stride, int64_t pad_top,
                      int64_t pad_left, int64_t out_h, int64_t out_w, float* y) = 0;
  // y[r, c] = y[r, c] * scale[c] + shift[c], then max(0, .) when relu (inference BatchNorm + ReLU).
  virtual void ChannelAffine(float* y, int64_t rows, int64_t cols, const float* scale, const float* shift,
                             bool relu) = 0;
  // Max pooling without padding on channels-last x [batch, h, w, c] -> y [batch, out_h, out_w, c].
  virtual void MaxPool2d(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, int64_t kernel,
                         int64_t stride, int64_t out_h, int64_t out_w, float* y) = 0;
  // y[b, :] = mean over n of x[b, n, :].
  virtual void MeanRows(const float* x, int64_t batch, int64_t n, int64_t cols, float* y) = 0;
  // x *= alpha.
  virtual void Scale(float* x, int64_t n, float alpha) = 0;
};

constexpr int kMaxCopyRank = 8;

// The CPU backend (OpenBLAS for matrix products, a thread pool for the rest).
std::unique_ptr<Backend> CreateCpuBackend();

// What a GPU backend computes its matrix products in. Activations, LayerNorm, softmax and every
// accumulation stay float32.
enum class Precision { kFloat32, kTfloat32, kFloat16, kBfloat16 };

// Whether this build has the CUDA backend and whether it can run here; reason says why not.
struct CudaStatus {
  bool compiled = false;
  bool available = false;
  std::string reason;
  int device_count = 0;
  std::vector<std::string> devices;  // "NVIDIA H200 (sm_90, 139 GiB)"
  std::string cublas;                // the cuBLAS library loaded, when available
  int runtime_version = 0;           // the CUDA runtime linked in (cudaRuntimeGetVersion: 1000*major + 10*minor), 0 without CUDA
  int driver_version = 0;            // the CUDA version the driver supports (cudaDriverGetVersion), 0 without a driver
};
CudaStatus ProbeCuda();
// Free and total memory of a CUDA device in bytes (both 0 when CUDA cannot run).
void CudaMemoryInfo(int device, size_t* free_bytes, size_t* total_bytes);

// The CUDA backend on device `device`; throws a backend-unavailable EngineError saying what to
// install or set when it cannot run.
std::unique_ptr<Backend> CreateCudaBackend(int device, Precision precision);
// Puts OpenBLAS in the mode the CPU backend runs it in (single-threaded); idempotent.
void ConfigureCpuBlas();

// Wraps `backend` in a per-op timer when PERCEIVER_PROFILE=1 (see profiling_backend.cc).
std::unique_ptr<Backend> WithProfilingIfRequested(std::unique_ptr<Backend> backend);

}  // namespace perceiver
