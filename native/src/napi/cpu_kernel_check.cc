// cpuKernelCheck({ op, ... }): validate-then-time for the CPU kernels of backend/cpu/kernels on a
// chosen instruction set (every set this CPU runs can be checked, so the AVX2 fallback is tested
// on an AVX-512 machine without any environment variable). Random inputs from a seed; the result
// is compared with a double-precision reference; products also run on 1 and 2 threads and report
// whether the two agree bit for bit, and whether anything outside C's [m, n] window was written.
// Op "fma_peak" (a register-only FMA loop, on 1 thread up to the engine's pool size) only times,
// for bench/cpu_gemm.ts and the benchmarks' "% of FMA peak" anchor. Off the main thread.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/kernels/gemm.h"
#include "backend/cpu/kernels/kernel_set.h"
#include "backend/cpu/kernels/rows.h"
#include "backend/cuda/kernels/flash_attention_plan.h"
#include "core/engine_error.h"
#include "core/thread_pool.h"
#include "napi/cpu_kernel_check.h"
#include "napi/js_errors.h"

namespace perceiver {

namespace {

using cpu::kernels::Isa;
using cpu::kernels::KernelSet;

struct Request {
  std::string op;
  Isa isa = Isa::kScalar;
  int64_t m = 1, n = 1, k = 1;
  int64_t lda = 0, ldb = 0, ldc = 0;  // 0: tight
  bool bias = false, gelu = false, transposed = true, sum_out = false, in_place = false;
  std::string residual = "none";  // none | separate | alias
  std::string dtype = "float32";  // float32 | bfloat16 (packed from float) | bfloat16-bits (packed from bf16)
  float alpha = 1.0f, beta = 0.0f;
  int threads = 1;
  unsigned seed = 1;
  int iterations = 0;
  bool compare_threads = true;  // products: also run on the other thread count (a third copy of C)
  // flash_attention (m = queries, n = keys, k = query/key width): value width, batch, heads, forced
  // key-range splits (0: the plan's choice for `multiprocessors`), key padding, operand rounding.
  int64_t dv = 1, batch = 1, heads = 1;
  int splits = 0, multiprocessors = 132;
  std::string keys = "none";      // none | mask | lengths
  std::string rounding = "none";  // none | bfloat16 | float16: what the tensor cores' operands are rounded to
};

struct Result {
  double max_abs = 0, relative = 0, max_relative = 0, reference_max = 0;
  int64_t outputs = 0, checked = 0, outside_writes = 0;
  bool threads_agree = true;
  uint64_t hash = 0;  // FNV-1a of the output's bits (products), to compare kernel sets
  int splits = 0;     // flash_attention: the key-range splits the plan made
  double best_ms = 0, median_ms = 0, gflops = 0, best_cpu_ms = 0, gflops_cpu = 0;
};

ThreadPool* PoolFor(int threads) {
  if (threads <= 1) return nullptr;
  static ThreadPool* two = new ThreadPool(2);  // leaked like ThreadPool::Global()
  return two;
}

std::vector<float> Normal(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

uint64_t Fnv1a(const std::vector<float>& v) {
  uint64_t h = 1469598103934665603ull;
  const auto* bytes = reinterpret_cast<const unsigned char*>(v.data());
  for (size_t i = 0; i < v.size() * sizeof(float); ++i) h = (h ^ bytes[i]) * 1099511628211ull;
  return h;
}

double RoundedBf16(float x) { return cpu::kernels::Bf16ToFloat(cpu::kernels::RoundToBf16(x)); }
double GeluRef(double v) { return 0.5 * v * std::erfc(-v / std::sqrt(2.0)); }

// Compares got with want (both as flat lists of checked outputs).
void Compare(const std::vector<double>& want, const std::vector<float>& got, Result* r) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::abs(static_cast<double>(got[i]) - want[i]);
    if (!(d <= r->max_abs)) r->max_abs = std::isnan(d) ? INFINITY : d;
    num += d * d;
    den += want[i] * want[i];
    r->reference_max = std::max(r->reference_max, std::abs(want[i]));
    // Relative error where it means something; tinier values are covered by max_abs.
    if (std::abs(want[i]) >= 1e-30 || std::isnan(d)) r->max_relative = std::max(r->max_relative, std::isnan(d) ? INFINITY : d / std::abs(want[i]));
  }
  r->relative = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  if (std::isnan(r->relative)) r->relative = INFINITY;
  r->checked = static_cast<int64_t>(want.size());
}

// CPU time of the calling thread, in ms: on a shared machine it leaves out the time the thread
// waited for a core, so single-threaded runs (the work on the calling thread) time the code
// rather than the neighbours. Zero where the clock is missing.
double ThreadCpuMs() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
  timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
#endif
  return 0;
}

template <typename Fn>
void Time(const Request& q, double flops, Fn&& fn, Result* r) {
  if (q.iterations <= 0) return;
  std::vector<double> ms;
  double best_cpu = 1e300;
  for (int i = 0; i < q.iterations; ++i) {
    const double c0 = ThreadCpuMs();
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    best_cpu = std::min(best_cpu, ThreadCpuMs() - c0);
  }
  std::sort(ms.begin(), ms.end());
  r->best_ms = ms.front();
  r->median_ms = ms[ms.size() / 2];
  r->gflops = flops > 0 ? flops / (r->best_ms * 1e6) : 0;
  r->best_cpu_ms = best_cpu;
  r->gflops_cpu = flops > 0 && best_cpu > 0 ? flops / (best_cpu * 1e6) : 0;
}

// Rows of a product checked against the reference: all of them for small products, else 61
// spread over m (the first and last included).
std::vector<int64_t> CheckedRows(int64_t m, int64_t n, int64_t k) {
  std::vector<int64_t> rows;
  if (m * n * k <= (int64_t{1} << 26)) {
    for (int64_t i = 0; i < m; ++i) rows.push_back(i);
  } else {
    for (int64_t i = 0; i < 61; ++i) rows.push_back(std::min(m - 1, i * (m - 1) / 60));
  }
  return rows;
}

void CheckGemmPacked(const Request& q, Result* res) {
  const KernelSet& ks = cpu::kernels::KernelsFor(q.isa);
  const int64_t m = q.m, n = q.n, k = q.k, lda = q.lda ? q.lda : k, ldc = q.ldc ? q.ldc : n;
  const int64_t ldw = k + 3, ld_res = n + 5;
  std::mt19937 rng(q.seed);
  std::vector<float> a = Normal(m * lda, rng, 1.0f);
  for (int64_t i = 0; i < m; ++i) std::fill(a.begin() + i * lda + k, a.begin() + (i + 1) * lda, NAN);  // never read
  std::vector<float> w = Normal(n * ldw, rng, 1.0f / std::sqrt(static_cast<float>(k)));
  const std::vector<float> bias = Normal(n, rng, 0.5f);
  const std::vector<float> residual = q.residual != "none" ? Normal(m * ld_res, rng, 1.0f) : std::vector<float>();
  const bool bf16 = q.dtype != "float32";
  std::unique_ptr<cpu::PackedMatrix> packed;
  if (q.dtype == "bfloat16-bits") {
    std::vector<uint16_t> bits(w.size());
    for (size_t i = 0; i < w.size(); ++i) bits[i] = cpu::kernels::RoundToBf16(w[i]);
    packed = cpu::PackWeightsBf16(bits.data(), n, k, ldw);
  } else {
    packed = cpu::PackWeights(w.data(), n, k, ldw, bf16 ? cpu::PackedType::kBfloat16 : cpu::PackedType::kFloat32);
  }
  // C starts as a sentinel (or the residual, when the residual aliases C) over its whole stride.
  constexpr float kSentinel = -12345.5f;
  std::vector<float> c0(m * ldc, kSentinel);
  cpu::GemmEpilogue ep;
  ep.bias = q.bias ? bias.data() : nullptr;
  ep.gelu = q.gelu;
  if (q.residual == "separate") {
    ep.residual = residual.data();
    ep.ld_residual = ld_res;
  } else if (q.residual == "alias") {
    for (int64_t i = 0; i < m; ++i) std::copy_n(residual.begin() + i * ld_res, n, c0.begin() + i * ldc);
    ep.ld_residual = ldc;
  }
  auto run = [&](std::vector<float>& c, int threads) {
    c = c0;
    cpu::GemmEpilogue e = ep;
    if (q.residual == "alias") e.residual = c.data();
    cpu::kernels::GemmPackedOn(ks, m, a.data(), lda, *packed, c.data(), ldc, e, PoolFor(threads));
  };
  std::vector<float> c, other;
  run(c, q.threads);
  if (q.compare_threads) {
    run(other, q.threads == 1 ? 2 : 1);
    res->threads_agree = std::memcmp(c.data(), other.data(), c.size() * sizeof(float)) == 0;
  }
  res->hash = Fnv1a(c);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = n; j < ldc; ++j) res->outside_writes += c[i * ldc + j] != kSentinel;
  }
  std::vector<double> want;
  std::vector<float> got;
  for (int64_t i : CheckedRows(m, n, k)) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t kk = 0; kk < k; ++kk) {
        const float x = a[i * lda + kk], y = w[j * ldw + kk];
        acc += bf16 ? RoundedBf16(x) * RoundedBf16(y) : static_cast<double>(x) * y;
      }
      if (q.bias) acc += bias[j];
      if (q.gelu) acc = GeluRef(acc);
      if (q.residual != "none") acc += residual[i * ld_res + j];
      want.push_back(acc);
      got.push_back(c[i * ldc + j]);
    }
  }
  Compare(want, got, res);
  res->outputs = m * n;
  std::vector<float>().swap(c0);
  other.resize(c.size());
  cpu::GemmEpilogue timed = ep;
  if (q.residual == "alias") timed.residual = other.data();  // C's own values, whatever they are by then
  Time(q, 2.0 * m * n * k, [&] { cpu::kernels::GemmPackedOn(ks, m, a.data(), lda, *packed, other.data(), ldc, timed, PoolFor(q.threads)); }, res);
}

void CheckGemm(const Request& q, Result* res) {
  const KernelSet& ks = cpu::kernels::KernelsFor(q.isa);
  const int64_t m = q.m, n = q.n, k = q.k, lda = q.lda ? q.lda : k, ldc = q.ldc ? q.ldc : n;
  const int64_t ldb = q.ldb ? q.ldb : (q.transposed ? k : n);
  std::mt19937 rng(q.seed);
  const std::vector<float> a = Normal(m * lda, rng, 1.0f);
  const std::vector<float> b = Normal((q.transposed ? n : k) * ldb, rng, 1.0f);
  std::vector<float> c0 = Normal(m * ldc, rng, 1.0f);
  std::vector<float> c = c0;
  cpu::kernels::GemmOn(ks, q.transposed, m, n, k, q.alpha, a.data(), lda, b.data(), ldb, q.beta, c.data(), ldc);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = n; j < ldc; ++j) res->outside_writes += c[i * ldc + j] != c0[i * ldc + j];
  }
  std::vector<double> want;
  std::vector<float> got;
  for (int64_t i : CheckedRows(m, n, k)) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t kk = 0; kk < k; ++kk) acc += static_cast<double>(a[i * lda + kk]) * (q.transposed ? b[j * ldb + kk] : b[kk * ldb + j]);
      want.push_back(q.alpha * acc + (q.beta != 0 ? c0[i * ldc + j] : 0.0));
      got.push_back(c[i * ldc + j]);
    }
  }
  Compare(want, got, res);
  res->outputs = m * n;
  Time(q, 2.0 * m * n * k, [&] { cpu::kernels::GemmOn(ks, q.transposed, m, n, k, q.alpha, a.data(), lda, b.data(), ldb, q.beta, c.data(), ldc); }, res);
}

// Row ops over m rows of n values.
void CheckRows(const Request& q, Result* res) {
  const KernelSet& ks = cpu::kernels::KernelsFor(q.isa);
  const int64_t m = q.m, n = q.n;
  std::mt19937 rng(q.seed);
  std::vector<double> want;
  std::vector<float> got;
  // The process's own kernel set is checked through rows.h's public (threaded) functions.
  const bool public_api = q.isa == cpu::kernels::DetectIsa();
  if (q.op == "layer_norm") {
    // An offset mean, as activations have: the statistics must not lose it.
    std::vector<float> x = Normal(m * n, rng, 2.0f), r = Normal(m * n, rng, 1.0f);
    for (float& v : x) v += 3.0f;
    const std::vector<float> gamma = Normal(n, rng, 1.0f), beta = Normal(n, rng, 1.0f);
    const bool fused = q.residual != "none";
    std::vector<float> y(m * n), sum(m * n, NAN);
    // In place (the residual stream): y overwrites x and x + r overwrites r.
    std::vector<float> xw = x, rw = r;
    float* y_out = q.in_place ? xw.data() : y.data();
    float* sum_at = q.sum_out ? (q.in_place && fused ? rw.data() : sum.data()) : nullptr;
    if (public_api) {
      cpu::LayerNormRows(m, n, xw.data(), n, fused ? rw.data() : nullptr, n, sum_at, n, gamma.data(), beta.data(), 1e-5f,
                         y_out, n, PoolFor(q.threads));
    } else {
      for (int64_t i = 0; i < m; ++i) {
        ks.layer_norm(xw.data() + i * n, fused ? rw.data() + i * n : nullptr, sum_at ? sum_at + i * n : nullptr, n,
                      gamma.data(), beta.data(), 1e-5f, y_out + i * n);
      }
    }
    if (q.in_place) y.assign(xw.begin(), xw.end());
    if (sum_at == rw.data()) sum.assign(rw.begin(), rw.end());
    for (int64_t i = 0; i < m; ++i) {
      double mean = 0, var = 0;
      for (int64_t j = 0; j < n; ++j) mean += static_cast<double>(x[i * n + j]) + (fused ? r[i * n + j] : 0.0);
      mean /= n;
      for (int64_t j = 0; j < n; ++j) {
        const double d = static_cast<double>(x[i * n + j]) + (fused ? r[i * n + j] : 0.0) - mean;
        var += d * d;
      }
      var /= n;
      for (int64_t j = 0; j < n; ++j) {
        const double s = static_cast<double>(x[i * n + j]) + (fused ? r[i * n + j] : 0.0);
        want.push_back((s - mean) / std::sqrt(var + 1e-5) * gamma[j] + beta[j]);
        got.push_back(y[i * n + j]);
        if (q.sum_out) {
          want.push_back(static_cast<float>(s));  // x + r rounded once, as float addition does
          got.push_back(sum[i * n + j]);
        }
      }
    }
    Time(q, 0, [&] { for (int64_t i = 0; i < m; ++i) ks.layer_norm(x.data() + i * n, nullptr, nullptr, n, gamma.data(), beta.data(), 1e-5f, y.data() + i * n); }, res);
  } else if (q.op == "gelu" || q.op == "exp") {
    // A wide range, the extremes included: GELU's tails, exp's underflow and overflow.
    std::vector<float> x = Normal(m * n, rng, q.op == "gelu" ? 4.0f : 30.0f);
    const float edges[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 10.0f, -10.0f, -13.0f, 88.0f, -87.0f, -104.0f, 200.0f, -200.0f};
    for (size_t i = 0; i < std::size(edges) && i < x.size(); ++i) x[i] = edges[i];
    std::vector<float> y = x;
    if (q.op == "gelu" && public_api) cpu::GeluInPlace(y.data(), m * n, PoolFor(q.threads));
    else if (q.op == "gelu") ks.gelu(y.data(), m * n);
    else ks.exp(x.data(), y.data(), m * n);
    for (int64_t i = 0; i < m * n; ++i) {
      want.push_back(q.op == "gelu" ? GeluRef(x[i]) : std::exp(static_cast<double>(x[i])));
      got.push_back(y[i]);
    }
    // Float32 cannot hold what overflows or underflows it: compare where the reference is a normal float.
    std::vector<double> w2;
    std::vector<float> g2;
    for (size_t i = 0; i < want.size(); ++i) {
      if (std::abs(want[i]) < 3.4e38 && (std::abs(want[i]) > 1.18e-38 || want[i] == 0)) {
        w2.push_back(want[i]);
        g2.push_back(got[i]);
      } else if (std::abs(want[i]) >= 3.4e38 && !(std::isinf(got[i]) || std::abs(got[i]) > 3e38)) {
        res->outside_writes += 1;  // an overflow that did not saturate
      }
    }
    want.swap(w2);
    got.swap(g2);
    Time(q, 0, [&] { if (q.op == "gelu") ks.gelu(y.data(), m * n); else ks.exp(x.data(), y.data(), m * n); }, res);
  } else if (q.op == "softmax") {
    std::vector<float> x = Normal(m * n, rng, 5.0f), y = x;
    if (public_api) cpu::SoftmaxRows(y.data(), m, n, PoolFor(q.threads));
    for (int64_t i = 0; i < m; ++i) {
      const float* row = x.data() + i * n;
      float* out = y.data() + i * n;
      if (!public_api) {
        const float mx = ks.row_max(row, n);
        if (std::isnan(mx) || mx != *std::max_element(row, row + n)) res->outside_writes += 1;  // the maximum is exact
        const float sum = ks.exp_shift_sum(row, out, n, mx);
        ks.scale(out, n, 1.0f / sum);
      }
      double ref_max = -INFINITY, ref_sum = 0;
      for (int64_t j = 0; j < n; ++j) ref_max = std::max(ref_max, static_cast<double>(row[j]));
      for (int64_t j = 0; j < n; ++j) ref_sum += std::exp(row[j] - ref_max);
      for (int64_t j = 0; j < n; ++j) {
        want.push_back(std::exp(row[j] - ref_max) / ref_sum);
        got.push_back(out[j]);
      }
    }
  } else if (q.op == "add") {
    const std::vector<float> a = Normal(m * n, rng, 1.0f), b = Normal(m * n, rng, 1.0f);
    std::vector<float> y(m * n);
    if (public_api) cpu::Add(a.data(), b.data(), y.data(), m * n, PoolFor(q.threads));
    else ks.add(a.data(), b.data(), y.data(), m * n);
    for (int64_t i = 0; i < m * n; ++i) {
      want.push_back(static_cast<float>(a[i] + b[i]));
      got.push_back(y[i]);
    }
  } else {
    ThrowInvalidArgument("op", "gemm_packed, gemm, layer_norm, gelu, exp, softmax, add or fma_peak", "\"" + q.op + "\"");
  }
  Compare(want, got, res);
  res->outputs = m * n;
}

void TimeFmaPeak(const Request& q, Result* res) {
  const KernelSet& ks = cpu::kernels::KernelsFor(q.isa);
  if (!ks.fma_loop) ThrowInvalidArgument("isa", "a kernel set with an FMA loop for fma_peak", "the scalar kernels, which have none");
  const int64_t loops = 1 << 22;
  // Two threads on the checks' own pool (what bench/cpu_gemm.ts compares with); more on the
  // engine's pool, which is what the products of a forward run on.
  ThreadPool* pool = q.threads <= 2 ? PoolFor(q.threads) : &ThreadPool::Global();
  std::vector<float> sinks(q.threads, 0.0f);  // one per thread: no shared writes
  auto once = [&] {
    if (pool) pool->ParallelFor(q.threads, 1, [&](int64_t i0, int64_t i1) { for (int64_t i = i0; i < i1; ++i) ks.fma_loop(loops, &sinks[i]); });
    else ks.fma_loop(loops, &sinks[0]);
  };
  once();
  Time(q, static_cast<double>(ks.fma_loop_flops) * loops * std::max(1, q.threads), once, res);
}

// The tensor-core flash attention (backend/cuda/kernels/flash_attention.cuh) emulated on the CPU
// with the kernel's own plan (flash_attention_plan.h): query tiles of BM rows, key tiles of BN, the
// zero padding, the online softmax in float (running maximum, rescale factor, sum of the rounded
// probabilities), the key-range splits and the combine step; operands and probabilities rounded as
// the tensor cores take them (or not, rounding "none"). Compared with softmax attention in double:
// with rounding "none" the emulation runs in double, so any disagreement beyond double rounding is
// the plan's or the recurrences' (a tile, split or combine the GPU kernel would get wrong too);
// with rounding it runs in float, as the kernel does, and measures what the rounding costs.
template <typename Real>
void EmulateFlashAttention(const Request& q, Result* res) {
  namespace flash = cuda::flash;
  const int64_t batch = q.batch, heads = q.heads, nq = q.m, nk = q.n, dqk = q.k, dv = q.dv;
  const int index = flash::FindConfig(dqk, dv);
  if (index < 0) ThrowInvalidArgument("k, dv", "query/key and value widths a tensor-core shape holds", std::to_string(dqk) + " and " + std::to_string(dv));
  const flash::Config& c = flash::kConfigs[index];
  const int64_t bm = c.bm(), bn = c.bn;
  std::mt19937 rng(q.seed);
  const std::vector<float> qm = Normal(batch * nq * heads * dqk, rng, 1.0f), km = Normal(batch * nk * heads * dqk, rng, 1.0f),
                           vm = Normal(batch * nk * heads * dv, rng, 1.0f);
  std::vector<uint8_t> mask(static_cast<size_t>(batch * nk), 1);
  std::vector<int64_t> lengths(static_cast<size_t>(batch), nk);
  if (q.keys == "mask" && batch > 1) {
    for (int64_t j = 0; j < nk; j += 5) mask[nk + j] = 0;
  }
  if (q.keys == "lengths") {
    for (int64_t b = 0; b < batch; ++b) lengths[b] = std::max<int64_t>(1, nk - b * nk / (2 * batch));
  }
  const int rounding = q.rounding == "bfloat16" ? 1 : q.rounding == "float16" ? 2 : 0;
  auto round = [rounding](Real x) -> Real {
    if (rounding == 1) return cpu::kernels::Bf16ToFloat(cpu::kernels::RoundToBf16(static_cast<float>(x)));
    if (rounding == 2) return static_cast<float>(static_cast<_Float16>(static_cast<float>(x)));
    return x;
  };
  const Real scale = Real(1) / std::sqrt(static_cast<Real>(dqk));
  const int64_t q_tiles = (nq + bm - 1) / bm;
  const flash::SplitPlan plan = flash::PlanSplits(nk, c.bn, q_tiles * heads * batch, q.multiprocessors, q.splits);
  res->splits = plan.splits;
  std::vector<float> out(static_cast<size_t>(batch * nq * heads * dv));
  // One block's state, as the kernel keeps it: Q rounded once, K and V rounded per tile, each row's
  // running maximum and sum; per split, the unnormalised outputs [split][row][dv] and the
  // (max, sum) pairs [row][split][2] the combine step reads.
  std::vector<Real> qt_rows(static_cast<size_t>(bm * dqk)), ktile(static_cast<size_t>(bn * dqk)), vtile(static_cast<size_t>(bn * dv)), p(static_cast<size_t>(bn));
  std::vector<Real> po(static_cast<size_t>(plan.splits * bm * dv)), ml(static_cast<size_t>(bm * plan.splits * 2));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t valid_keys = q.keys == "lengths" ? std::min(nk, lengths[b]) : nk;
    const int64_t tiles = (valid_keys + bn - 1) / bn;
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t qt = 0; qt < q_tiles; ++qt) {
        const int64_t q0 = qt * bm, rows = std::min(bm, nq - q0);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t d = 0; d < dqk; ++d) qt_rows[r * dqk + d] = round(qm[((b * nq + q0 + r) * heads + h) * dqk + d]);
        }
        for (int s = 0; s < plan.splits; ++s) {
          const int64_t t0 = s * plan.tiles_per_split, t1 = std::min(tiles, t0 + plan.tiles_per_split);
          std::fill(po.begin() + s * bm * dv, po.begin() + (s + 1) * bm * dv, Real(0));
          for (int64_t r = 0; r < rows; ++r) {
            ml[(r * plan.splits + s) * 2] = -FLT_MAX;
            ml[(r * plan.splits + s) * 2 + 1] = 0;
          }
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t k0 = t * bn, keys = std::min(bn, valid_keys - k0);
            for (int64_t j = 0; j < keys; ++j) {
              for (int64_t d = 0; d < dqk; ++d) ktile[j * dqk + d] = round(km[((b * nk + k0 + j) * heads + h) * dqk + d]);
              for (int64_t d = 0; d < dv; ++d) vtile[j * dv + d] = round(vm[((b * nk + k0 + j) * heads + h) * dv + d]);
            }
            for (int64_t r = 0; r < rows; ++r) {
              Real& m = ml[(r * plan.splits + s) * 2];
              Real& l = ml[(r * plan.splits + s) * 2 + 1];
              Real tile_max = -FLT_MAX;
              for (int64_t j = 0; j < keys; ++j) {
                Real dot = 0;
                for (int64_t d = 0; d < dqk; ++d) dot += qt_rows[r * dqk + d] * ktile[j * dqk + d];
                p[j] = dot * scale;
                if (mask[b * nk + k0 + j]) tile_max = std::max(tile_max, p[j]);
              }
              const Real new_max = std::max(m, tile_max);
              Real sum = 0;
              for (int64_t j = 0; j < keys; ++j) {
                p[j] = mask[b * nk + k0 + j] && new_max > -FLT_MAX ? round(std::exp(p[j] - new_max)) : Real(0);
                sum += p[j];
              }
              const Real factor = flash::RescaleFactor(m, new_max);
              l = l * factor + sum;
              m = new_max;
              Real* o = po.data() + (s * bm + r) * dv;
              for (int64_t d = 0; d < dv; ++d) o[d] *= factor;
              for (int64_t j = 0; j < keys; ++j) {
                for (int64_t d = 0; d < dv; ++d) o[d] += p[j] * vtile[j * dv + d];
              }
            }
          }
        }
        for (int64_t r = 0; r < rows; ++r) {
          float* y = out.data() + ((b * nq + q0 + r) * heads + h) * dv;
          const Real* rml = ml.data() + r * plan.splits * 2;
          if (plan.splits == 1) {
            const Real l = rml[1];
            for (int64_t d = 0; d < dv; ++d) y[d] = static_cast<float>(l > 0 ? po[r * dv + d] * (Real(1) / l) : Real(0));
            continue;
          }
          const Real m = flash::CombineMax(rml, plan.splits, 1);
          Real den = 0;
          for (int s = 0; s < plan.splits; ++s) den += flash::CombineWeight(rml[2 * s], m) * rml[2 * s + 1];
          for (int64_t d = 0; d < dv; ++d) {
            Real num = 0;
            for (int s = 0; s < plan.splits; ++s) num += flash::CombineWeight(rml[2 * s], m) * po[(s * bm + r) * dv + d];
            y[d] = static_cast<float>(den > 0 ? num / den : Real(0));
          }
        }
      }
    }
  }
  // Softmax attention in double over the attended keys, from the unrounded operands.
  std::vector<double> want;
  want.reserve(out.size());
  std::vector<double> w(static_cast<size_t>(nk));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t valid_keys = q.keys == "lengths" ? std::min(nk, lengths[b]) : nk;
    for (int64_t i = 0; i < nq; ++i) {
      for (int64_t h = 0; h < heads; ++h) {
        double top = -INFINITY;
        for (int64_t j = 0; j < valid_keys; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < dqk; ++d) dot += static_cast<double>(qm[((b * nq + i) * heads + h) * dqk + d]) * km[((b * nk + j) * heads + h) * dqk + d];
          w[j] = mask[b * nk + j] ? dot * scale : -INFINITY;
          top = std::max(top, w[j]);
        }
        double total = 0;
        for (int64_t j = 0; j < valid_keys; ++j) total += (w[j] = std::exp(w[j] - top));
        for (int64_t d = 0; d < dv; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < valid_keys; ++j) acc += w[j] * vm[((b * nk + j) * heads + h) * dv + d];
          want.push_back(acc / total);
        }
      }
    }
  }
  Compare(want, out, res);
  res->outputs = static_cast<int64_t>(out.size());
}

void CheckFlashAttention(const Request& q, Result* res) {
  if (q.rounding == "none") {
    EmulateFlashAttention<double>(q, res);
  } else {
    EmulateFlashAttention<float>(q, res);
  }
}

class CpuKernelCheckWorker final : public Napi::AsyncWorker {
 public:
  CpuKernelCheckWorker(Napi::Env env, Request request)
      : Napi::AsyncWorker(env, "perceiver-io:cpu-kernel-check"), deferred_(Napi::Promise::Deferred::New(env)), q_(std::move(request)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      if (q_.op == "gemm_packed") CheckGemmPacked(q_, &r_);
      else if (q_.op == "gemm") CheckGemm(q_, &r_);
      else if (q_.op == "fma_peak") TimeFmaPeak(q_, &r_);
      else if (q_.op == "flash_attention") CheckFlashAttention(q_, &r_);
      else CheckRows(q_, &r_);
    } catch (...) {
      failed_ = true;
      error_ = ClassifyException(std::current_exception());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (failed_) {
      deferred_.Reject(MakeJsError(env, error_).Value());
      return;
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("op", q_.op);
    out.Set("isa", cpu::kernels::IsaName(q_.isa));
    out.Set("outputs", static_cast<double>(r_.outputs));
    out.Set("checked", static_cast<double>(r_.checked));
    out.Set("maxAbsError", r_.max_abs);
    out.Set("relativeError", r_.relative);
    out.Set("maxRelativeError", r_.max_relative);
    out.Set("referenceMax", r_.reference_max);
    out.Set("outsideWrites", static_cast<double>(r_.outside_writes));
    out.Set("threadsAgree", r_.threads_agree);
    char hash[17];
    std::snprintf(hash, sizeof(hash), "%016llx", static_cast<unsigned long long>(r_.hash));
    out.Set("outputHash", hash);
    out.Set("bestMs", r_.best_ms);
    out.Set("medianMs", r_.median_ms);
    out.Set("gflops", r_.gflops);
    out.Set("bestThreadCpuMs", r_.best_cpu_ms);
    out.Set("gflopsThreadCpu", r_.gflops_cpu);
    if (q_.op == "flash_attention") out.Set("splits", r_.splits);
    deferred_.Resolve(out);
  }

 private:
  Napi::Promise::Deferred deferred_;
  Request q_;
  Result r_;
  bool failed_ = false;
  EngineError error_{ErrorCode::kInternal, "internal error: no result"};
};

int64_t IntField(Napi::Object o, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return fallback;
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi) && std::floor(d) == d)) {
    ThrowInvalidArgument(name, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", DescribeJs(v));
  }
  return static_cast<int64_t>(d);
}

bool BoolField(Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return false;
  if (!v.IsBoolean()) ThrowInvalidArgument(name, "a boolean", DescribeJs(v));
  return v.As<Napi::Boolean>().Value();
}

std::string StringField(Napi::Object o, const char* name, const std::string& fallback, std::initializer_list<const char*> allowed) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return fallback;
  const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  for (const char* a : allowed) {
    if (s == a) return s;
  }
  std::string list;
  for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
  ThrowInvalidArgument(name, "one of " + list, DescribeJs(v));
}

}  // namespace

Napi::Value CpuKernelCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) ThrowInvalidArgument("cpuKernelCheck({ op, ... })", "an object", info.Length() < 1 ? "no argument" : DescribeJs(info[0]));
    Napi::Object o = info[0].As<Napi::Object>();
    Request q;
    q.op = StringField(o, "op", "", {"gemm_packed", "gemm", "layer_norm", "gelu", "exp", "softmax", "add", "fma_peak", "flash_attention"});
    const std::string isa = StringField(o, "isa", cpu::kernels::IsaName(cpu::kernels::DetectIsa()), {"scalar", "avx2", "avx512", "avx512-bf16"});
    cpu::kernels::ParseIsa(isa.c_str(), &q.isa);
    if (!cpu::kernels::IsaSupported(q.isa)) ThrowInvalidArgument("isa", "a kernel set this CPU can run", "\"" + isa + "\"");
    constexpr int64_t kMaxDim = 1 << 20;
    q.m = IntField(o, "m", 1, 1, kMaxDim);
    q.n = IntField(o, "n", 1, 1, kMaxDim);
    q.k = IntField(o, "k", 1, 1, kMaxDim);
    q.lda = IntField(o, "lda", 0, 0, kMaxDim);
    q.ldb = IntField(o, "ldb", 0, 0, kMaxDim);
    q.ldc = IntField(o, "ldc", 0, 0, kMaxDim);
    if ((q.lda && q.lda < q.k) || (q.ldc && q.ldc < q.n) || (q.ldb && q.ldb < (o.Get("transposed").IsBoolean() && !o.Get("transposed").As<Napi::Boolean>().Value() ? q.n : q.k))) {
      ThrowInvalidArgument("lda, ldb, ldc", "0 (tight) or at least the row they hold",
                           std::to_string(q.lda) + ", " + std::to_string(q.ldb) + ", " + std::to_string(q.ldc));
    }
    // Every buffer the check allocates stays under 2^26 floats (256 MiB; a product holds up to
    // five), and the work under 2^40 multiply-adds (seconds, not hours).
    const int64_t largest = std::max({q.m * std::max({q.lda, q.ldc, q.k, q.n}), q.n * std::max(q.k, q.ldb), q.k * std::max(q.n, q.ldb)});
    if (largest > (int64_t{1} << 26)) ThrowInvalidArgument("m, n, k", "operands of at most 2^26 elements", "one of " + std::to_string(largest));
    q.bias = BoolField(o, "bias");
    q.gelu = BoolField(o, "gelu");
    q.sum_out = BoolField(o, "sumOut");
    q.in_place = BoolField(o, "inPlace");
    if (!o.Get("transposed").IsUndefined()) q.transposed = BoolField(o, "transposed");
    q.residual = StringField(o, "residual", "none", {"none", "separate", "alias"});
    q.dtype = StringField(o, "dtype", "float32", {"float32", "bfloat16", "bfloat16-bits"});
    Napi::Value alpha = o.Get("alpha");
    if (!alpha.IsUndefined()) {
      const double d = alpha.IsNumber() ? alpha.As<Napi::Number>().DoubleValue() : NAN;
      if (!(std::abs(d) <= 1e6)) ThrowInvalidArgument("alpha", "a finite number of magnitude at most 1e6", DescribeJs(alpha));
      q.alpha = static_cast<float>(d);
    }
    q.beta = static_cast<float>(IntField(o, "beta", 0, 0, 1));
    q.threads = static_cast<int>(IntField(o, "threads", 1, 1, q.op == "fma_peak" ? std::max(2, ThreadPool::Global().size()) : 2));
    q.seed = static_cast<unsigned>(IntField(o, "seed", 1, 0, 1 << 30));
    q.iterations = static_cast<int>(IntField(o, "iterations", 0, 0, 1000));
    if (!o.Get("compareThreads").IsUndefined()) q.compare_threads = BoolField(o, "compareThreads");
    q.dv = IntField(o, "dv", q.k, 1, kMaxDim);
    q.batch = IntField(o, "batch", 1, 1, 64);
    q.heads = IntField(o, "heads", 1, 1, 64);
    q.splits = static_cast<int>(IntField(o, "splits", 0, 0, 256));
    q.multiprocessors = static_cast<int>(IntField(o, "multiprocessors", 132, 1, 1024));
    q.keys = StringField(o, "keys", "none", {"none", "mask", "lengths"});
    q.rounding = StringField(o, "rounding", "none", {"none", "bfloat16", "float16"});
    if (q.op == "flash_attention") {
      // q, k and v under 2^26 floats each; the emulation and its double reference both do
      // batch heads nq nk (dqk + dv) multiply-adds, kept under 2^33 (seconds on one core).
      const int64_t rows = q.batch * q.heads;
      if (rows * std::max(q.m, q.n) * std::max(q.k, q.dv) > (int64_t{1} << 26)) ThrowInvalidArgument("m, n, k, dv", "operands of at most 2^26 elements", "batch heads max(m, n) max(k, dv) = " + std::to_string(rows * std::max(q.m, q.n) * std::max(q.k, q.dv)));
      if (static_cast<double>(rows) * q.m * q.n * (q.k + q.dv) > static_cast<double>(int64_t{1} << 33)) {
        ThrowInvalidArgument("batch, heads, m, n, k, dv", "batch heads m n (k + dv) under 2^33 (seconds of emulation, not minutes)", "about 2^" + std::to_string(static_cast<int>(std::log2(static_cast<double>(rows) * q.m * q.n * (q.k + q.dv)))));
      }
    }
    if (static_cast<double>(q.m) * q.n * q.k * (q.iterations + 2) > static_cast<double>(int64_t{1} << 40)) {
      ThrowInvalidArgument("m, n, k, iterations", "m n k (iterations + 2) under 2^40 multiply-adds", "more");
    }
    auto* worker = new CpuKernelCheckWorker(env, std::move(q));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  });
}

}  // namespace perceiver
