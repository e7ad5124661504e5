// Flash attention on tensor cores: the launcher (shape choice, key-range splits, shared-memory
// limits) and the combine step of split launches. The kernel is flash_attention.cuh; the shapes
// and the split plan are flash_attention_plan.h, which the CPU emulation shares.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <mutex>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise_common.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace perceiver::cuda {

namespace flash {

// Defined by the instantiations in flash_attention_bf16.cu and flash_attention_fp16.cu.
template <typename T, int DQK, int DV, int WM, int WN, int BN, int KSPLIT>
void LaunchKernel(const Params& p, dim3 grid, size_t shared_bytes, cudaStream_t stream);

namespace {

using LaunchFn = void (*)(const Params&, dim3, size_t, cudaStream_t);

struct Entry {
  LaunchFn bf16, fp16;
};

#define PERCEIVER_FLASH_ENTRY(dqk, dv, wm, wn, bn, ksplit) \
  Entry{&LaunchKernel<__nv_bfloat16, dqk, dv, wm, wn, bn, ksplit>, &LaunchKernel<__half, dqk, dv, wm, wn, bn, ksplit>},
const Entry kEntries[] = {PERCEIVER_FLASH_CONFIGS(PERCEIVER_FLASH_ENTRY)};
#undef PERCEIVER_FLASH_ENTRY
static_assert(sizeof(kEntries) / sizeof(kEntries[0]) == kConfigCount, "one launcher per config");

// What the plan needs from a device, read once per device (attribute queries cost host time).
struct DeviceLimits {
  int multiprocessors = 0;
  size_t max_shared = 0;  // opt-in bytes per block
};

DeviceLimits LimitsOfCurrentDevice() {
  static std::mutex mutex;
  static std::vector<DeviceLimits> cache;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  if (static_cast<size_t>(device) >= cache.size()) cache.resize(static_cast<size_t>(device) + 1);
  DeviceLimits& limits = cache[static_cast<size_t>(device)];
  if (limits.multiprocessors == 0) {
    int sms = 0, shared = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    CUDA_CHECK(cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    limits.max_shared = static_cast<size_t>(shared);
    limits.multiprocessors = sms;
  }
  return limits;
}

int64_t QueryTiles(const Params& p, const Config& c) { return (p.nq + c.bm() - 1) / c.bm(); }

SplitPlan Plan(const Params& p, const Config& c, int force_splits) {
  const int64_t blocks = QueryTiles(p, c) * p.heads * p.batch;
  return PlanSplits(p.nk, c.bn, blocks, LimitsOfCurrentDevice().multiprocessors, force_splits);
}

// out[b, r, h * dv + c] = sum_s w_s o_s / sum_s w_s l_s over the splits (see CombineMax).
__global__ void CombineKernel(const Params p) {
  const int64_t rows = p.batch * p.heads * p.nq, n = rows * p.dv;
  const int64_t split_stride = rows;  // rows between one split's block and the next
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / p.dv, c = i % p.dv;  // row = (b * heads + h) * nq + r
    const float* ml = p.partial_ml + 2 * row;
    const float m = CombineMax(ml, p.splits, split_stride);
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      const float w = CombineWeight(ml[2 * s * split_stride], m);
      num += w * p.partial_out[(s * split_stride + row) * p.dv + c];
      den += w * ml[2 * s * split_stride + 1];
    }
    const int64_t r = row % p.nq, bh = row / p.nq, h = bh % p.heads, b = bh / p.heads;
    p.out[b * p.out_batch_stride + r * p.out_row_stride + h * p.dv + c] = den > 0.0f ? num / den : 0.0f;
  }
}

}  // namespace

}  // namespace flash

bool FlashAttentionSupports(int64_t dqk, int64_t dv) {
  const int index = flash::FindConfig(dqk, dv);
  return index >= 0 && flash::kConfigs[index].SharedBytes() <= flash::LimitsOfCurrentDevice().max_shared;
}

flash::Params FlashAttentionParams(const AttentionOp& op) {
  flash::Params p;
  p.q = op.q.data;
  p.k = op.k.data;
  p.v = op.v.data;
  p.q_batch_stride = op.q.batch_stride;
  p.q_row_stride = op.q.ld;
  p.k_batch_stride = op.k.batch_stride;
  p.k_row_stride = op.k.ld;
  p.v_batch_stride = op.v.batch_stride;
  p.v_row_stride = op.v.ld;
  p.out = op.out;
  p.out_row_stride = op.heads * op.dv;
  p.out_batch_stride = op.nq * op.heads * op.dv;
  p.batch = op.batch;
  p.heads = op.heads;
  p.nq = op.nq;
  p.nk = op.nk;
  p.dqk = static_cast<int>(op.dqk);
  p.dv = static_cast<int>(op.dv);
  p.scale = op.scale;
  return p;
}

size_t FlashAttentionWorkspaceFloats(const flash::Params& p, int force_splits) {
  const int index = flash::FindConfig(p.dqk, p.dv);
  if (index < 0) return 0;
  const flash::SplitPlan plan = flash::Plan(p, flash::kConfigs[index], force_splits);
  return flash::WorkspaceFloats(plan.splits, p.batch, p.heads, p.nq, p.dv);
}

void LaunchFlashAttention(flash::Params p, DType dtype, float* workspace, size_t workspace_floats, int force_splits, cudaStream_t stream) {
  if (p.batch == 0 || p.heads == 0 || p.nq == 0) return;
  if (dtype != DType::kBfloat16 && dtype != DType::kFloat16) ThrowInvalidArgument("flash attention operands", "bfloat16 or float16", DTypeName(dtype));
  if (p.nk <= 0) ThrowInvalidArgument("flash attention keys", "at least one key", std::to_string(p.nk));
  if (p.heads > 65535 || p.batch > 65535) ThrowInvalidArgument("attention heads, batch", "at most 65535 heads and batch items on the GPU", std::to_string(p.heads) + " heads, " + std::to_string(p.batch) + " items");
  const int index = flash::FindConfig(p.dqk, p.dv);
  if (index < 0 || !FlashAttentionSupports(p.dqk, p.dv)) {
    ThrowInvalidArgument("flash attention widths", "query/key and value widths a tensor-core shape holds on this GPU (FlashAttentionSupports says so first)",
                         std::to_string(p.dqk) + " / " + std::to_string(p.dv));
  }
  const flash::Config& c = flash::kConfigs[index];
  const flash::SplitPlan plan = flash::Plan(p, c, force_splits);
  const size_t need = flash::WorkspaceFloats(plan.splits, p.batch, p.heads, p.nq, p.dv);
  if (need > workspace_floats) ThrowInvalidArgument("flash attention workspace", "at least " + std::to_string(need) + " floats (FlashAttentionWorkspaceFloats)", std::to_string(workspace_floats));
  p.splits = plan.splits;
  p.tiles_per_split = plan.tiles_per_split;
  if (plan.splits > 1) {
    p.partial_out = workspace;
    p.partial_ml = workspace + static_cast<size_t>(plan.splits) * static_cast<size_t>(p.batch * p.heads * p.nq * p.dv);
  }
  const int64_t grid_x = flash::QueryTiles(p, c) * plan.splits;
  if (grid_x > 0x7fffffff) ThrowInvalidArgument("flash attention query rows", "at most 2^31 - 1 query tiles x splits", std::to_string(grid_x));
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(p.heads), static_cast<unsigned>(p.batch));
  const flash::Entry& entry = flash::kEntries[index];
  (dtype == DType::kBfloat16 ? entry.bf16 : entry.fp16)(p, grid, c.SharedBytes(), stream);
  if (plan.splits > 1) {
    flash::CombineKernel<<<GridFor(p.batch * p.heads * p.nq * p.dv), kThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace perceiver::cuda
