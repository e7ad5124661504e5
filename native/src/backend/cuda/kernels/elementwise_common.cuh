// Grid sizing shared by the element-wise kernels: grid-stride loops over n elements.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace perceiver::cuda {

constexpr int kThreads = 256;

inline unsigned GridFor(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535 * 8)));
}

}  // namespace perceiver::cuda
