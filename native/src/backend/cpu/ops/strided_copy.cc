// N-D strided copy: the layout op behind permutes, space-to-depth, subsampling, concatenation and
// broadcasting. The innermost dimension is copied in a tight loop (memcpy when both sides are
// contiguous there); the outer index space is split across the pool.
#include <algorithm>
#include <cstring>

#include "backend/cpu/ops/cpu_ops.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

void StridedCopy(float* dst, const int64_t* dst_strides, const float* src, const int64_t* src_strides,
                 const int64_t* shape, int rank) {
  if (rank == 0) {
    *dst = *src;
    return;
  }
  int64_t outer = 1;
  for (int d = 0; d < rank - 1; ++d) outer *= shape[d];
  const int64_t inner = shape[rank - 1];
  if (outer == 0 || inner == 0) return;
  const int64_t ds = dst_strides[rank - 1], ss = src_strides[rank - 1];
  ThreadPool::Global().ParallelFor(outer, std::max<int64_t>(1, 4096 / inner), [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      int64_t rem = o, doff = 0, soff = 0;
      for (int d = rank - 2; d >= 0; --d) {
        const int64_t i = rem % shape[d];
        rem /= shape[d];
        doff += i * dst_strides[d];
        soff += i * src_strides[d];
      }
      float* dp = dst + doff;
      const float* sp = src + soff;
      if (ds == 1 && ss == 1) {
        std::memcpy(dp, sp, sizeof(float) * inner);
      } else {
        for (int64_t i = 0; i < inner; ++i) dp[i * ds] = sp[i * ss];
      }
    }
  });
}

void AddRowsBroadcast(float* y, const float* x, int64_t rows, int64_t cols, int64_t period) {
  ThreadPool::Global().ParallelFor(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* yr = y + r * cols;
      const float* xr = x + (r % period) * cols;
      for (int64_t c = 0; c < cols; ++c) yr[c] += xr[c];
    }
  });
}

void GatherRows(float* dst, const float* src, const int64_t* indices, int64_t count, int64_t batch, int64_t src_rows,
                int64_t cols) {
  ThreadPool::Global().ParallelFor(batch * count, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / count, i = t % count;
      std::memcpy(dst + t * cols, src + (b * src_rows + indices[i]) * cols, sizeof(float) * cols);
    }
  });
}

void MeanRows(const float* x, int64_t batch, int64_t n, int64_t cols, float* y) {
  for (int64_t b = 0; b < batch; ++b) {
    float* yb = y + b * cols;
    for (int64_t c = 0; c < cols; ++c) yb[c] = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const float* xr = x + (b * n + i) * cols;
      for (int64_t c = 0; c < cols; ++c) yb[c] += xr[c];
    }
    const float inv = 1.0f / static_cast<float>(n);
    for (int64_t c = 0; c < cols; ++c) yb[c] *= inv;
  }
}

void Scale(float* x, int64_t n, float alpha) {
  ThreadPool::Global().ParallelFor(n, 65536, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] *= alpha;
  });
}

}  // namespace perceiver::cpu
