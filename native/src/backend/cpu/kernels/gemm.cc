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
  if (!IsaSupported(isa)) ThrowInvalidArgument(std::string("this CPU cannot run the ") + IsaName(isa) + " kernels");
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
  if (n < 1 || k < 1) ThrowInvalidArgument("PackWeights: expected n >= 1 and k >= 1, got n=" + std::to_string(n) + " k=" + std::to_string(k));
  if (ldw < k) ThrowInvalidArgument("PackWeights: expected ldw >= k (" + std::to_string(k) + "), got " + std::to_string(ldw));
  if (!w) ThrowInvalidArgument("PackWeights: the weight pointer is null");
  if (n > (int64_t{1} << 31) || k > (int64_t{1} << 31) || n * k > (int64_t{1} << 40)) {
    ThrowInvalidArgument("PackWeights: " + std::to_string(n) + " x " + std::to_string(k) + " is too large to pack");
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
  if (m < 0) ThrowInvalidArgument(fn + ": expected m >= 0, got " + std::to_string(m));
  if (m > 0 && (!a || !c)) ThrowInvalidArgument(fn + ": a null operand pointer");
  if (lda < k) ThrowInvalidArgument(fn + ": expected lda >= k (" + std::to_string(k) + "), got " + std::to_string(lda));
  if (ldc < n) ThrowInvalidArgument(fn + ": expected ldc >= n (" + std::to_string(n) + "), got " + std::to_string(ldc));
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

void GemmPackedOn(const KernelSet& ks, int64_t m, const float* a, int64_t lda, const PackedMatrix& packed, float* c,
                  int64_t ldc, const GemmEpilogue& epilogue, ThreadPool* pool) {
  const auto& w = static_cast<const PackedMatrixImpl&>(packed);  // the only implementation
  const int64_t n = w.n(), k = w.k();
  CheckProduct("GemmPacked", m, a, lda, k, c, ldc, n);
  if (epilogue.residual && epilogue.ld_residual < n) {
    ThrowInvalidArgument("GemmPacked: expected ld_residual >= n (" + std::to_string(n) + "), got " + std::to_string(epilogue.ld_residual));
  }
  if (m == 0) return;
  const bool bf16 = w.type() == PackedType::kBfloat16;
  const int64_t esize = bf16 ? 2 : 4;
  // k block: one panel's slice of W (kc x kNr, 32 KiB) stays in a 48 KiB L1 while every row tile
  // of the task passes it; A's tiles come from L2. Even, for bf16 pairs.
  const int64_t kc = k <= kKBlockBytes / (kNr * esize) * 5 / 4 ? k : kKBlockBytes / (kNr * esize);
  const int64_t k_blocks = (k + kc - 1) / kc;
  const int64_t panels = Panels(n);
  // Column block: its W (~1 MiB) stays in L2 while consecutive tasks (row blocks) reuse it.
  const int64_t panel_bytes = w.panel_stride() * esize;
  const int64_t block_panels = std::clamp<int64_t>(kWBlockBytes / panel_bytes, 1, panels);
  const int64_t col_blocks = (panels + block_panels - 1) / block_panels;
  const int64_t row_tiles = (m + kMr - 1) / kMr;
  const int threads = pool ? pool->size() : 1;
  // Rows per task: 8 tiles, fewer when that leaves under 4 tasks per thread to balance.
  int64_t block_tiles = 8;
  while (block_tiles > 1 && ((row_tiles + block_tiles - 1) / block_tiles) * col_blocks < 4 * threads) block_tiles /= 2;
  const int64_t row_blocks = (row_tiles + block_tiles - 1) / block_tiles;
  const int64_t a_ld_bf16 = 2 * PairSteps(k);
  const size_t a_esize = ks.bf16_a_is_bits ? 2 : 4;

  auto run = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t cb = t / row_blocks, rb = t % row_blocks;  // consecutive tasks share W's block
      const int64_t p0 = cb * block_panels, p1 = std::min(panels, p0 + block_panels);
      const int64_t tile0 = rb * block_tiles, tile1 = std::min(row_tiles, tile0 + block_tiles);
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
      args.alpha = 1.0f;
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
          args.b = bf16 ? static_cast<const void*>(w.bf16() + p * w.panel_stride() + k0 * kNr)
                        : static_cast<const void*>(w.f32() + p * w.panel_stride() + k0 * kNr);
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

void GemmOn(const KernelSet& ks, bool b_transposed, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
            int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (n < 0 || k < 0) ThrowInvalidArgument("Gemm: expected n >= 0 and k >= 0");
  CheckProduct("Gemm", m, a, lda, k, c, ldc, n);
  if (beta != 0.0f && beta != 1.0f) ThrowInvalidArgument("Gemm: expected beta 0 or 1, got " + std::to_string(beta));
  if (ldb < (b_transposed ? k : n)) ThrowInvalidArgument("Gemm: ldb is smaller than a row of B");
  if (m == 0 || n == 0) return;
  if (m > 0 && k > 0 && !b) ThrowInvalidArgument("Gemm: a null operand pointer");
  if (k == 0) {  // an empty sum: C = beta C
    if (beta == 0.0f) {
      for (int64_t i = 0; i < m; ++i) std::memset(c + i * ldc, 0, n * sizeof(float));
    }
    return;
  }
  // B is packed one kNr-column panel at a time into the layout PackWeights produces.
  float* panel = static_cast<float*>(Scratch(1, k * kNr * sizeof(float)));
  for (int64_t j0 = 0; j0 < n; j0 += kNr) {
    const int nr = static_cast<int>(std::min<int64_t>(kNr, n - j0));
    if (b_transposed) {  // B [n, k]
      for (int j = 0; j < kNr; ++j) {
        float* dst = panel + j;
        if (j < nr) {
          const float* src = b + (j0 + j) * ldb;
          for (int64_t kk = 0; kk < k; ++kk) dst[kk * kNr] = src[kk];
        } else {
          for (int64_t kk = 0; kk < k; ++kk) dst[kk * kNr] = 0.0f;
        }
      }
    } else {  // B [k, n]
      for (int64_t kk = 0; kk < k; ++kk) {
        std::memcpy(panel + kk * kNr, b + kk * ldb + j0, nr * sizeof(float));
        if (nr < kNr) std::memset(panel + kk * kNr + nr, 0, (kNr - nr) * sizeof(float));
      }
    }
    for (int64_t r0 = 0; r0 < m; r0 += kMr) {
      const int mr = static_cast<int>(std::min<int64_t>(kMr, m - r0));
      TileArgs args{};
      args.k = k;
      args.a = mr < kMr ? PadTile(a + r0 * lda, lda, mr, k) : a + r0 * lda;
      args.lda = mr < kMr ? k : lda;
      args.b = panel;
      args.c = c + r0 * ldc + j0;
      args.ldc = ldc;
      args.mr = mr;
      args.nr = nr;
      args.alpha = alpha;
      args.residual = beta != 0.0f ? args.c : nullptr;
      args.ld_residual = ldc;
      ks.tile_f32(args);
    }
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
