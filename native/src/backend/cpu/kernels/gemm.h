// CONTRACT (written by the lead; the gemm helper implements it, the engine helper codes against it).
// Matrix products for the CPU backend: packed-weight products with fused epilogues, and a plain
// strided product for attention. Own micro-kernels (AVX-512 where the CPU has it, AVX2+FMA
// fallback, chosen once at run time from CPUID, never from an environment variable), so a
// prebuilt binary needs no BLAS installed and is not pinned to what an old BLAS knows of this CPU.
#pragma once

#include <cstdint>
#include <memory>

namespace perceiver {
class ThreadPool;
}

namespace perceiver::cpu {

// Which micro-kernels this process runs: "avx512", "avx512-bf16" (products of bf16 weights with
// vdpbf16ps), "avx2" or "scalar". Decided once from CPUID.
// (gemm helper: on a CPU with AVX512_BF16 where vdpbf16ps measures slower than widening bf16 to
// float32 and using FMAs, as on the Xeon this was developed on, the answer is "avx512"; the two
// give bitwise the same products, see kernels_avx512.cc.)
const char* GemmIsa();

// What a packed matrix holds.
enum class PackedType : uint8_t { kFloat32, kBfloat16 };

// A weight matrix W [n, k] (PyTorch's Linear layout [out_features, in_features]) packed once, at
// load, into the panel layout the micro-kernel streams, for y = x @ W^T. Owns its memory
// (64-byte aligned): the source may be freed after packing.
class PackedMatrix {
 public:
  virtual ~PackedMatrix() = default;
  virtual int64_t n() const = 0;  // output features
  virtual int64_t k() const = 0;  // input features
  virtual PackedType type() const = 0;
  virtual size_t bytes() const = 0;
};

// Packs W [n, k] row-major (row stride ldw >= k, in elements). kBfloat16 rounds to nearest even;
// a bf16 source (uint16_t bits) is taken as is.
std::unique_ptr<PackedMatrix> PackWeights(const float* w, int64_t n, int64_t k, int64_t ldw, PackedType type);
std::unique_ptr<PackedMatrix> PackWeightsBf16(const uint16_t* w, int64_t n, int64_t k, int64_t ldw);

// What is applied to each output element, in this order: acc (+ bias[col]), then exact-erf GELU,
// then (+ residual[row, col]), then stored (float32).
struct GemmEpilogue {
  const float* bias = nullptr;      // [n] or null
  bool gelu = false;                // exact erf GELU, as torch's nn.GELU()
  const float* residual = nullptr;  // [m, n] with row stride ld_residual, or null; may alias c
  int64_t ld_residual = 0;
};

// C[m, n] = epilogue(A[m, k] @ W^T), A row-major with row stride lda, C with row stride ldc.
// Threaded over `pool` (nullptr: the calling thread only). Results must not depend on the
// number of threads (each output element is reduced over k in one fixed order).
void GemmPacked(int64_t m, const float* a, int64_t lda, const PackedMatrix& w, float* c, int64_t ldc,
                const GemmEpilogue& epilogue, ThreadPool* pool);

// Plain single-threaded product on unpacked operands, for attention blocks (the caller threads):
// C[m, n] = alpha * A[m, k] @ op(B) + beta * C, op(B) = B^T when b_transposed (B is [n, k],
// row stride ldb) else B ([k, n], row stride ldb). beta is 0 or 1 (0: C is not read).
void Gemm(bool b_transposed, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace perceiver::cpu
