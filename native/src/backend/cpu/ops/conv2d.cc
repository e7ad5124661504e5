// 2-D convolution as im2col + the packed-weight product, producing channels-last output (what the Perceiver flattens
// into its input sequence), plus the inference BatchNorm/ReLU and max-pool that follow it in
// PerceiverImagePreprocessor's "conv" stem. Rows of output pixels are processed in blocks so
// the im2col buffer stays small whatever the image size.
#include <algorithm>
#include <limits>
#include <vector>

#include "backend/cpu/ops/cpu_ops.h"
#include "core/thread_pool.h"

namespace perceiver::cpu {

void Conv2d(const Conv2dOp& op) {
  const float* x = op.x;
  const int64_t batch = op.batch, in_c = op.in_c, h = op.h, w = op.w, kh = op.kh, kw = op.kw, stride = op.stride;
  const int64_t pad_top = op.pad_top, pad_left = op.pad_left, out_h = op.out_h, out_w = op.out_w;
  const int64_t out_c = op.weight->rows();
  const PackedMatrix& weight = Cpu(op.weight).packed();
  GemmEpilogue epilogue;
  epilogue.bias = op.bias ? op.bias->values() : nullptr;
  float* y = op.y;
  const int64_t patch = in_c * kh * kw;  // one im2col row, in weight order (c, ky, kx)
  const int64_t pixels = batch * out_h * out_w;
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (pixels + kBlock - 1) / kBlock;
  ThreadPool::Global().ParallelFor(blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> cols(static_cast<size_t>(kBlock * patch));
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t p0 = blk * kBlock, p1 = std::min(pixels, p0 + kBlock);
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t b = p / (out_h * out_w), oy = (p / out_w) % out_h, ox = p % out_w;
        float* row = cols.data() + (p - p0) * patch;
        for (int64_t c = 0; c < in_c; ++c) {
          const float* plane = x + (b * in_c + c) * h * w;
          for (int64_t ky = 0; ky < kh; ++ky) {
            const int64_t iy = oy * stride + ky - pad_top;
            for (int64_t kx = 0; kx < kw; ++kx) {
              const int64_t ix = ox * stride + kx - pad_left;
              *row++ = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? plane[iy * w + ix] : 0.0f;
            }
          }
        }
      }
      // This block's product on the calling thread: the blocks are what the pool splits.
      GemmPacked(p1 - p0, cols.data(), patch, weight, y + p0 * out_c, out_c, epilogue, nullptr);
    }
  });
}

void ChannelAffine(const ChannelAffineOp& op) {
  float* y = op.y;
  const int64_t cols = op.cols;
  const float* scale = op.scale->values();
  const float* shift = op.shift->values();
  const bool relu = op.relu;
  ThreadPool::Global().ParallelFor(op.rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* yr = y + r * cols;
      for (int64_t c = 0; c < cols; ++c) {
        const float v = yr[c] * scale[c] + shift[c];
        yr[c] = relu ? std::max(0.0f, v) : v;
      }
    }
  });
}

void MaxPool(const MaxPoolOp& op) {
  const float* x = op.x;
  float* y = op.y;
  const int64_t batch = op.batch, h = op.h, w = op.w, c = op.c, kernel = op.kernel, stride = op.stride;
  const int64_t out_h = op.out_h, out_w = op.out_w;
  ThreadPool::Global().ParallelFor(batch * out_h, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / out_h, oy = r % out_h;
      for (int64_t ox = 0; ox < out_w; ++ox) {
        float* out = y + ((b * out_h + oy) * out_w + ox) * c;
        std::fill(out, out + c, -std::numeric_limits<float>::infinity());
        for (int64_t ky = 0; ky < kernel; ++ky) {
          for (int64_t kx = 0; kx < kernel; ++kx) {
            const float* in = x + ((b * h + oy * stride + ky) * w + ox * stride + kx) * c;
            for (int64_t ch = 0; ch < c; ++ch) out[ch] = std::max(out[ch], in[ch]);
          }
        }
      }
    }
  });
}

}  // namespace perceiver::cpu
