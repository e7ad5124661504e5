// The product driver: packing, blocking and threading around the per-ISA tile kernels of
// kernel_set.h, and the choice of kernels from CPUID.
//
// Why our own kernels rather than a BLAS: see gemm.h. The blocking: a task is a block of rows of
// A by a block of columns of W; the column block is sized so its packed weights (~1 MiB) stay in
// the core's L2 while every row tile of the task streams past them, and each tile kernel reduces
// the whole k extent in registers, so the epilogue (bias, GELU, residual) is applied as the tile
// is stored and no partial sum is ever written to C (C may alias the residual).
#include "backend/cpu/kernels/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "backend/cpu/kernels/kernel_set.h"
#include "core/engine_error.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

using kernels::Isa;
using kernels::KernelSet;
using kernels::kMr;
using kernels::kNr;

namespace kernels {

Isa DetectIsa() {
  static const Isa isa = CpuIsa() == Isa::kAvx512Bf16 && !Bf16DotIsFaster() ? Isa::kAvx512 : CpuIsa();
  return isa;
}

Isa CpuIsa() {
  static const Isa isa = [] {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("fma");
    if (avx512 && __builtin_cpu_supports("avx512bf16") && Avx512Bf16Kernels()) return Isa::kAvx512Bf16;
    if (avx512 && Avx512Kernels()) return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && Avx2Kernels()) return Isa::kAvx2;
#endif
    return Isa::kScalar;
  }();
  return isa;
}

bool IsaSupported(Isa isa) { return static_cast<int>(isa) <= static_cast<int>(CpuIsa()); }

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Bf16: return "avx512-bf16";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "scalar";
  }
}

bool ParseIsa(const char* name, Isa* isa) {
  for (Isa i : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    if (std::strcmp(name, IsaName(i)) == 0) {
      *isa = i;
      return true;
    }
  }
  return false;
}

const KernelSet& KernelsFor(Isa isa) {
  if (!IsaSupported(isa)) ThrowInvalidArgument("isa", "a kernel set this CPU can run", IsaName(isa));
  const KernelSet* set = nullptr;
  switch (isa) {
    case Isa::kAvx512Bf16: set = Avx512Bf16Kernels(); break;
    case Isa::kAvx512: set = Avx512Kernels(); break;
    case Isa::kAvx2: set = Avx2Kernels(); break;
    default: set = ScalarKernels(); break;
  }
  return *set;
}

const KernelSet& ActiveKernels() {
  static const KernelSet& set = KernelsFor(DetectIsa());
  return set;
}

}  // namespace kernels

namespace {

// 64-byte aligned storage (a cache line; what aligned AVX-512 loads want).
struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<void, AlignedFree>;

AlignedBuffer AllocateAligned(size_t bytes) {
  const size_t rounded = (std::max<size_t>(bytes, 64) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw EngineError(ErrorCode::kOutOfMemory, "cannot allocate " + std::to_string(rounded) + " bytes for packed weights");
  std::memset(p, 0, rounded);
  return AlignedBuffer(p);
}

// A per-thread scratch area, grown on demand and kept for the thread's life. Slots: 0 A's rows
// (rounded to bf16, or a padded partial tile), 1 a packed B panel (Gemm), 2 partial sums.
void* Scratch(int slot, size_t bytes) {
  struct Slot {
    AlignedBuffer buffer;
    size_t size = 0;
  };
  thread_local Slot slots[3];
  Slot& s = slots[slot];
  if (s.size < bytes) {
    s.buffer = AllocateAligned(bytes);
    s.size = bytes;
  }
  return s.buffer.get();
}

// Cache budgets of the blocking (bytes): W's k-block slice of one panel (L1) and W's column block (L2).
constexpr int64_t kKBlockBytes = 32 << 10;
constexpr int64_t kWBlockBytes = 1 << 20;
// ThreadPool::ParallelFor's chunks per thread (core/thread_pool.cc), which the task split matches.
constexpr int64_t kPoolChunksPerThread = 4;

int64_t Panels(int64_t n) { return (n + kNr - 1) / kNr; }
int64_t PairSteps(int64_t k) { return (k + 1) / 2; }

class PackedMatrixImpl final : public PackedMatrix {
 public:
  PackedMatrixImpl(int64_t n, int64_t k, PackedType type) : n_(n), k_(k), type_(type) {
    const size_t elements = static_cast<size_t>(Panels(n)) * kNr *
                            static_cast<size_t>(type == PackedType::kFloat32 ? k : 2 * PairSteps(k));
    bytes_ = elements * (type == PackedType::kFloat32 ? 4 : 2);
    data_ = AllocateAligned(bytes_);  // zeroed: the padding columns and the odd k's pair stay 0
  }
  int64_t n() const override { return n_; }
  int64_t k() const override { return k_; }
  PackedType type() const override { return type_; }
  size_t bytes() const override { return bytes_; }

  float* f32() const { return static_cast<float*>(data_.get()); }
  uint16_t* bf16() const { return static_cast<uint16_t*>(data_.get()); }
  // Elements (of the packed type) per panel of kNr columns.
  int64_t panel_stride() const { return kNr * (type_ == PackedType::kFloat32 ? k_ : 2 * PairSteps(k_)); }

 private:
  int64_t n_, k_;
  PackedType type_;
  size_t bytes_ = 0;
  AlignedBuffer data_;
};

void CheckShape(int64_t n, int64_t k, int64_t ldw, const void* w) {
  const std::string nk = "n=" + std::to_string(n) + " k=" + std::to_string(k);
  if (n < 1 || k < 1) ThrowInvalidArgument("PackWeights n, k", "n >= 1 and k >= 1", nk);
  if (ldw < k) ThrowInvalidArgument("PackWeights ldw", "ldw >= k (" + std::to_string(k) + ")", std::to_string(ldw));
  if (!w) ThrowInvalidArgument("PackWeights w", "a weight pointer", "null");
  if (n > (int64_t{1} << 31) || k > (int64_t{1} << 31) || n * k > (int64_t{1} << 40)) {
    ThrowInvalidArgument("PackWeights n, k", "n, k <= 2^31 and n k <= 2^40", nk);
  }
}

// W[row, kk] goes to panel row / kNr, column row % kNr: float32 at kk * kNr + col; bf16 at
// (kk / 2) * 2 kNr + 2 col + kk % 2, so one 32-bit lane holds the (k, k+1) pair vdpbf16ps takes.
template <typename Source, typename Convert>
void PackRows(const Source* w, int64_t n, int64_t k, int64_t ldw, PackedMatrixImpl& out, Convert convert) {
  const int64_t stride = out.panel_stride();
  for (int64_t row = 0; row < n; ++row) {
    const Source* src = w + row * ldw;
    const int64_t panel = row / kNr, col = row % kNr;
    if (out.type() == PackedType::kFloat32) {
      float* dst = out.f32() + panel * stride + col;
      for (int64_t kk = 0; kk < k; ++kk) dst[kk * kNr] = static_cast<float>(src[kk]);
    } else {
      uint16_t* dst = out.bf16() + panel * stride + 2 * col;
      for (int64_t kk = 0; kk < k; ++kk) dst[(kk / 2) * 2 * kNr + (kk & 1)] = convert(src[kk]);
    }
  }
}

void CheckProduct(const char* where, int64_t m, const void* a, int64_t lda, int64_t k, const void* c, int64_t ldc, int64_t n) {
  const std::string fn(where);
  if (m < 0) ThrowInvalidArgument(fn + " m", "m >= 0", std::to_string(m));
  if (m > 0 && (!a || !c)) ThrowInvalidArgument(fn + " a, c", "operand pointers", "null");
  if (lda < k) ThrowInvalidArgument(fn + " lda", "lda >= k (" + std::to_string(k) + ")", std::to_string(lda));
  if (ldc < n) ThrowInvalidArgument(fn + " ldc", "ldc >= n (" + std::to_string(n) + ")", std::to_string(ldc));
}

// rows x k of B (row stride ldb) into a panel, transposed: B[j, kk] to panel[kk * kNr + j]. In 4 x 4
// blocks through SSE registers where it can (a scalar copy of a 32-wide Q.K^T panel cost about a
// tenth of the product at k = 32); a copy, so the result does not depend on how it is done.
void TransposeInto(const float* b, int64_t ldb, int rows, int64_t k, float* panel) {
  int j = 0;
#if defined(__SSE2__)
  for (; j + 4 <= rows; j += 4) {
    const float* r0 = b + j * ldb;
    int64_t kk = 0;
    for (; kk + 4 <= k; kk += 4) {
      __m128 x0 = _mm_loadu_ps(r0 + kk), x1 = _mm_loadu_ps(r0 + ldb + kk);
      __m128 x2 = _mm_loadu_ps(r0 + 2 * ldb + kk), x3 = _mm_loadu_ps(r0 + 3 * ldb + kk);
      _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
      _mm_storeu_ps(panel + kk * kNr + j, x0);
      _mm_storeu_ps(panel + (kk + 1) * kNr + j, x1);
      _mm_storeu_ps(panel + (kk + 2) * kNr + j, x2);
      _mm_storeu_ps(panel + (kk + 3) * kNr + j, x3);
    }
    for (; kk < k; ++kk) {
      for (int i = 0; i < 4; ++i) panel[kk * kNr + j + i] = r0[i * ldb + kk];
    }
  }
#endif
  for (; j < rows; ++j) {
    const float* src = b + j * ldb;
    for (int64_t kk = 0; kk < k; ++kk) panel[kk * kNr + j] = src[kk];
  }
}

// A partial row tile copied into a zero-padded kMr-row scratch tile (the kernels read kMr rows).
const float* PadTile(const float* a, int64_t lda, int mr, int64_t k) {
  float* tile = static_cast<float*>(Scratch(0, kMr * k * sizeof(float)));
  for (int r = 0; r < kMr; ++r) {
    if (r < mr) std::memcpy(tile + r * k, a + r * lda, k * sizeof(float));
    else std::memset(tile + r * k, 0, k * sizeof(float));
  }
  return tile;
}

}  // namespace

const char* GemmIsa() { return kernels::IsaName(kernels::DetectIsa()); }

std::unique_ptr<PackedMatrix> PackWeights(const float* w, int64_t n, int64_t k, int64_t ldw, PackedType type) {
  CheckShape(n, k, ldw, w);
  auto out = std::make_unique<PackedMatrixImpl>(n, k, type);
  PackRows(w, n, k, ldw, *out, kernels::RoundToBf16);
  return out;
}

std::unique_ptr<PackedMatrix> PackWeightsBf16(const uint16_t* w, int64_t n, int64_t k, int64_t ldw) {
  CheckShape(n, k, ldw, w);
  auto out = std::make_unique<PackedMatrixImpl>(n, k, PackedType::kBfloat16);
  PackRows(w, n, k, ldw, *out, [](uint16_t h) { return h; });
  return out;
}

namespace kernels {

namespace {

// Panels in PackWeights' layout: a PackedMatrixImpl's, or B packed per call by GemmOn.
struct PanelView {
  const void* data;
  int64_t n, k;
  int64_t panel_stride;  // elements per panel
  bool bf16;
  const float* f32() const { return static_cast<const float*>(data); }
  const uint16_t* bf16_bits() const { return static_cast<const uint16_t*>(data); }
};

// The blocked product over packed panels, shared by GemmPacked and Gemm: C = epilogue(alpha A W^T).
void RunPanels(const KernelSet& ks, int64_t m, const float* a, int64_t lda, const PanelView& w, float alpha, float* c,
               int64_t ldc, const GemmEpilogue& epilogue, ThreadPool* pool) {
  const int64_t n = w.n, k = w.k;
  const bool bf16 = w.bf16;
  const int64_t esize = bf16 ? 2 : 4;
  // k block: one panel's slice of W (kc x kNr, 32 KiB) stays in a 48 KiB L1 while every row tile
  // of the task passes it; A's tiles come from L2. Even, for bf16 pairs.
  const int64_t kc = k <= kKBlockBytes / (kNr * esize) * 5 / 4 ? k : kKBlockBytes / (kNr * esize);
  const int64_t k_blocks = (k + kc - 1) / kc;
  const int64_t panels = Panels(n);
  // Column block: its W (~1 MiB at most) stays in L2 while consecutive tasks (row blocks) reuse it.
  // With a pool, the count is rounded up to a multiple of the pool's chunks (kPoolChunksPerThread
  // per thread) and panels and row tiles are spread evenly, so each chunk of tasks is the same
  // work: 7 blocks of n = 1280 over 2 threads left one thread idle for an eighth of the product.
  const int threads = pool ? pool->size() : 1;
  const int64_t panel_bytes = w.panel_stride * esize;
  const int64_t budget_panels = std::clamp<int64_t>(kWBlockBytes / panel_bytes, 1, panels);
  int64_t col_blocks = (panels + budget_panels - 1) / budget_panels;
  const int64_t pool_chunks = threads > 1 ? threads * kPoolChunksPerThread : 1;
  col_blocks = std::min(panels, (col_blocks + pool_chunks - 1) / pool_chunks * pool_chunks);
  const int64_t row_tiles = (m + kMr - 1) / kMr;
  // Rows per task: 8 tiles, fewer when that leaves under 4 tasks per thread to balance.
  int64_t block_tiles = 8;
  while (block_tiles > 1 && ((row_tiles + block_tiles - 1) / block_tiles) * col_blocks < 4 * threads) block_tiles /= 2;
  const int64_t row_blocks = (row_tiles + block_tiles - 1) / block_tiles;
  const int64_t a_ld_bf16 = 2 * PairSteps(k);
  const size_t a_esize = ks.bf16_a_is_bits ? 2 : 4;

  auto run = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t cb = t / row_blocks, rb = t % row_blocks;  // consecutive tasks share W's block
      const int64_t p0 = cb * panels / col_blocks, p1 = (cb + 1) * panels / col_blocks;
      const int64_t tile0 = rb * row_tiles / row_blocks, tile1 = (rb + 1) * row_tiles / row_blocks;
      const int64_t r_begin = tile0 * kMr, rows = std::min(m, tile1 * kMr) - r_begin;
      // A's rows for this task: in place for float32 (a partial last tile padded in scratch),
      // rounded to bf16 in scratch for bf16 weights.
      const void* a_block;
      int64_t a_ld;
      const void* a_last = nullptr;  // the padded partial tile, if any
      if (bf16) {
        char* dst = static_cast<char*>(Scratch(0, (tile1 - tile0) * kMr * a_ld_bf16 * a_esize));
        for (int64_t r = 0; r < (tile1 - tile0) * kMr; ++r) {
          char* row = dst + r * a_ld_bf16 * a_esize;
          if (r < rows) {
            ks.round_bf16(a + (r_begin + r) * lda, k, row);
            if (a_ld_bf16 > k) std::memset(row + k * a_esize, 0, (a_ld_bf16 - k) * a_esize);
          } else {
            std::memset(row, 0, a_ld_bf16 * a_esize);
          }
        }
        a_block = dst;
        a_ld = a_ld_bf16;
      } else {
        a_block = a + r_begin * lda;
        a_ld = lda;
        if (rows % kMr != 0) a_last = PadTile(a + (tile1 - 1) * kMr * lda, lda, static_cast<int>(rows % kMr), k);
      }
      float* acc = k_blocks > 1 ? static_cast<float*>(Scratch(2, (tile1 - tile0) * (p1 - p0) * kMr * kNr * sizeof(float))) : nullptr;
      TileArgs args{};
      args.ldc = ldc;
      args.alpha = alpha;
      args.gelu = epilogue.gelu;
      args.ld_residual = epilogue.ld_residual;
      for (int64_t kb = 0; kb < k_blocks; ++kb) {
        const int64_t k0 = kb * kc;
        args.k = std::min(kc, k - k0);
        args.acc_in = kb > 0;
        args.acc_out = kb + 1 < k_blocks;
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t j0 = p * kNr;
          args.nr = static_cast<int>(std::min<int64_t>(kNr, n - j0));
          args.bias = epilogue.bias ? epilogue.bias + j0 : nullptr;
          args.b = bf16 ? static_cast<const void*>(w.bf16_bits() + p * w.panel_stride + k0 * kNr)
                        : static_cast<const void*>(w.f32() + p * w.panel_stride + k0 * kNr);
          for (int64_t tile = tile0; tile < tile1; ++tile) {
            const int64_t r0 = tile * kMr;
            args.mr = static_cast<int>(std::min<int64_t>(kMr, m - r0));
            if (bf16) {
              args.a = static_cast<const char*>(a_block) + ((tile - tile0) * kMr * a_ld + k0) * a_esize;
              args.lda = a_ld;
            } else if (a_last && tile == tile1 - 1) {
              args.a = static_cast<const float*>(a_last) + k0;
              args.lda = k;
            } else {
              args.a = static_cast<const float*>(a_block) + (tile - tile0) * kMr * a_ld + k0;
              args.lda = a_ld;
            }
            args.c = c + r0 * ldc + j0;
            args.residual = epilogue.residual ? epilogue.residual + r0 * epilogue.ld_residual + j0 : nullptr;
            args.acc = acc ? acc + ((tile - tile0) * (p1 - p0) + (p - p0)) * kMr * kNr : nullptr;
            // The next slice of W this task reads (the next panel, or the next k block's first),
            // pulled toward L2 a share per row tile while this slice is in use: the weights of a
            // model's consecutive products are cold (each is read once per forward), and without
            // it each slice's first tile waited on memory (most of what took language batch 1
            // from 0.91x to 1.04x of onnxruntime-node: bench/RESULTS.md, session 2's final run).
            args.prefetch = nullptr;
            if (!bf16) {
              const int64_t share = (kc * kNr * 4 + (tile1 - tile0) - 1) / (tile1 - tile0);
              const float* next = p + 1 < p1 ? w.f32() + (p + 1) * w.panel_stride + k0 * kNr
                                  : kb + 1 < k_blocks ? w.f32() + p0 * w.panel_stride + (k0 + kc) * kNr : nullptr;
              if (next) args.prefetch = reinterpret_cast<const char*>(next) + (tile - tile0) * (share & ~int64_t{63});
            }
            if (bf16) ks.tile_bf16(args);
            else ks.tile_f32(args);
          }
        }
      }
    }
  };
  const int64_t tasks = row_blocks * col_blocks;
  if (pool && threads > 1 && tasks > 1) pool->ParallelFor(tasks, 1, run);
  else run(0, tasks);
}

}  // namespace

void GemmPackedOn(const KernelSet& ks, int64_t m, const float* a, int64_t lda, const PackedMatrix& packed, float* c,
                  int64_t ldc, const GemmEpilogue& epilogue, ThreadPool* pool) {
  const auto& w = static_cast<const PackedMatrixImpl&>(packed);  // the only implementation
  const int64_t n = w.n(), k = w.k();
  CheckProduct("GemmPacked", m, a, lda, k, c, ldc, n);
  if (epilogue.residual && epilogue.ld_residual < n) {
    ThrowInvalidArgument("GemmPacked ld_residual", "ld_residual >= n (" + std::to_string(n) + ")", std::to_string(epilogue.ld_residual));
  }
  if (m == 0) return;
  const bool bf16 = w.type() == PackedType::kBfloat16;
  const PanelView view{bf16 ? static_cast<const void*>(w.bf16()) : static_cast<const void*>(w.f32()), n, k, w.panel_stride(), bf16};
  RunPanels(ks, m, a, lda, view, 1.0f, c, ldc, epilogue, pool);
}

void GemmOn(const KernelSet& ks, bool b_transposed, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
            int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (n < 0 || k < 0) ThrowInvalidArgument("Gemm n, k", "n >= 0 and k >= 0", "n=" + std::to_string(n) + " k=" + std::to_string(k));
  CheckProduct("Gemm", m, a, lda, k, c, ldc, n);
  if (beta != 0.0f && beta != 1.0f) ThrowInvalidArgument("Gemm beta", "0 or 1", std::to_string(beta));
  if (ldb < (b_transposed ? k : n)) ThrowInvalidArgument("Gemm ldb", "ldb >= " + std::to_string(b_transposed ? k : n) + " (a row of B)", std::to_string(ldb));
  if (m == 0 || n == 0) return;
  if (m > 0 && k > 0 && !b) ThrowInvalidArgument("Gemm b", "an operand pointer", "null");
  if (k == 0) {  // an empty sum: C = beta C
    if (beta == 0.0f) {
      for (int64_t i = 0; i < m; ++i) std::memset(c + i * ldc, 0, n * sizeof(float));
    }
    return;
  }
  // B is packed into the layout PackWeights produces (in this thread's scratch), a chunk of panels
  // (~1 MiB, like the packed product's column block) at a time, and each chunk runs through the
  // packed-weights driver: its k blocking keeps a panel's slice in L1 while every row tile passes
  // (the P.V product of a 2048-key block has k = 2048), and a transposed B (Q.K^T, k = the head
  // width) is read row by row. Chunking bounds the scratch (a thread keeps it) for any n; every
  // output element is still one k sum in one order, so the result is the same for any chunking.
  const int64_t panels = Panels(n);
  const int64_t chunk_panels = std::clamp<int64_t>(kWBlockBytes / (kNr * k * static_cast<int64_t>(sizeof(float))), 1, panels);
  float* packed = static_cast<float*>(Scratch(1, static_cast<size_t>(chunk_panels) * kNr * k * sizeof(float)));
  for (int64_t p0 = 0; p0 < panels; p0 += chunk_panels) {
    const int64_t p1 = std::min(panels, p0 + chunk_panels);
    for (int64_t p = p0; p < p1; ++p) {
      float* panel = packed + (p - p0) * kNr * k;
      const int64_t j0 = p * kNr;
      const int nr = static_cast<int>(std::min<int64_t>(kNr, n - j0));
      if (b_transposed) {  // B [n, k]: row j0 + j of B is column j of the panel
        if (nr < kNr) std::memset(panel, 0, kNr * k * sizeof(float));
        TransposeInto(b + j0 * ldb, ldb, nr, k, panel);
      } else {  // B [k, n]: columns j0.. of row kk of B are row kk of the panel
        for (int64_t kk = 0; kk < k; ++kk) {
          std::memcpy(panel + kk * kNr, b + kk * ldb + j0, nr * sizeof(float));
          if (nr < kNr) std::memset(panel + kk * kNr + nr, 0, (kNr - nr) * sizeof(float));
        }
      }
    }
    const int64_t j0 = p0 * kNr, cols = std::min(n, p1 * kNr) - j0;
    GemmEpilogue epilogue;
    if (beta != 0.0f) {  // + C: the epilogue's residual, read where it is written (it may alias)
      epilogue.residual = c + j0;
      epilogue.ld_residual = ldc;
    }
    RunPanels(ks, m, a, lda, PanelView{packed, cols, k, kNr * k, false}, alpha, c + j0, ldc, epilogue, nullptr);
  }
}

}  // namespace kernels

void GemmPacked(int64_t m, const float* a, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
                const GemmEpilogue& epilogue, ThreadPool* pool) {
  kernels::GemmPackedOn(kernels::ActiveKernels(), m, a, lda, w, c, ldc, epilogue, pool);
}

void Gemm(bool b_transposed, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  kernels::GemmOn(kernels::ActiveKernels(), b_transposed, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace perceiver::cpu
