// N-D strided copy: the layout op behind permutes, space-to-depth, subsampling, concatenation and
// broadcasting. The innermost dimension is copied in a tight loop (memcpy when both sides are
// contiguous there); the outer index space is split across the pool.
#include <algorithm>
#include <cstring>

#include "backend/cpu/ops/cpu_ops.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

void Copy(const CopyOp& op) {
  float* dst = op.dst;
  const float* src = op.src;
  const int64_t* dst_strides = op.dst_strides;
  const int64_t* src_strides = op.src_strides;
  const int64_t* shape = op.shape;
  const int rank = op.rank;
  if (rank == 1 && dst_strides[0] == 1 && src_strides[0] == 1) {  // a plain copy, in parallel blocks
    ThreadPool::Global().ParallelFor(shape[0], 1 << 15, [&](int64_t i0, int64_t i1) {
      std::memcpy(dst + i0, src + i0, sizeof(float) * (i1 - i0));
    });
    return;
  }
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

void AddRows(const AddRowsOp& op) {
  float* y = op.y;
  const float* x = op.x;
  const int64_t cols = op.cols, period = op.period;
  ThreadPool::Global().ParallelFor(op.rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* yr = y + r * cols;
      const float* xr = x + (r % period) * cols;
      for (int64_t c = 0; c < cols; ++c) yr[c] += xr[c];
    }
  });
}

void GatherRows(const GatherRowsOp& op) {
  float* dst = op.dst;
  const float* src = op.src;
  const int64_t* indices = op.indices;
  const int64_t count = op.count, batch = op.batch, src_rows = op.src_rows, cols = op.cols;
  ThreadPool::Global().ParallelFor(batch * count, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / count, i = t % count;
      std::memcpy(dst + t * cols, src + (b * src_rows + indices[i]) * cols, sizeof(float) * cols);
    }
  });
}

void MeanRows(const MeanRowsOp& op) {
  const float* x = op.x;
  float* y = op.y;
  const int64_t batch = op.batch, n = op.n, cols = op.cols;
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

void Scale(const ScaleOp& op) {
  float* x = op.x;
  const float alpha = op.alpha;
  ThreadPool::Global().ParallelFor(op.n, 65536, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] *= alpha;
  });
}

}  // namespace perceiver::cpu
