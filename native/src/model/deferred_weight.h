// Weights named while a model's spec is read (on the main thread, where JavaScript objects can be
// read) and loaded into the backend later, on a worker thread: reading, converting, packing and
// checking hundreds of megabytes never blocks the event loop. Until LoadAll() the weight knows
// its shape and use only; afterwards it forwards to the backend's weight.
//
// A weight's values come either from host float32 memory (a JavaScript Float32Array, kept alive
// by the caller until the load settles) or from a byte range of a checkpoint file the loader has
// open (safetensors): such a weight is read (pread) and widened to float32 just before it is
// packed, and that temporary copy is freed right after, so loading holds one weight's source
// beyond the engine's own copy instead of the whole file. The TypeScript loader validated the
// file's header; the range is re-checked here only as far as memory safety needs (a short read is
// an error, never uninitialised memory).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace perceiver {

enum class FileDType { kFloat32, kFloat16, kBfloat16, kFloat64 };

// `count` values of `dtype` at byte `offset` of the open file `fd` (little-endian, as safetensors).
struct WeightFileRange {
  int fd = -1;
  uint64_t offset = 0;
  FileDType dtype = FileDType::kFloat32;
  int64_t count = 0;
};

// One source of a weight's values: host float32 `data`, or `file`; neither means zeros.
struct SourceWeight {
  const float* data = nullptr;
  std::shared_ptr<const WeightFileRange> file;
  int64_t rows = 0, cols = 0;
  std::string name;
  bool present() const { return data != nullptr || file != nullptr; }
};

// Reads a file-backed source into float32 values (on the calling thread). Throws a weight-mismatch
// EngineError naming the weight when the file cannot supply them.
std::vector<float> ReadWeightFile(const SourceWeight& source);

// Values computed from the (float32) values of a weight's sources, e.g. a folded BatchNorm.
using WeightCompute = std::function<std::vector<float>(const std::vector<const float*>& sources)>;

class DeferredWeight final : public Weight {
 public:
  // parts are stacked by rows (fused projections); a part with no values is zeros. compute, when
  // given, makes the values from the parts instead ([rows, cols] as given).
  // transpose: load the (single) part transposed, [cols, rows].
  DeferredWeight(std::vector<SourceWeight> parts, std::string name, WeightUse use, bool transpose = false);
  DeferredWeight(std::vector<SourceWeight> inputs, std::string name, WeightUse use, int64_t rows, int64_t cols, WeightCompute compute);

  DType dtype() const override { return inner_ ? inner_->dtype() : DType::kFloat32; }
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  WeightUse use() const override { return use_; }
  const float* values() const override { return inner_ ? inner_->values() : nullptr; }
  const Weight& resolved() const override { return inner_ ? inner_->resolved() : *this; }

  // Loads the weight into `backend` (file-backed parts are read first; a stacked weight is joined
  // in a temporary host copy). Every temporary is freed before it returns.
  void Load(Backend& backend);

 private:
  std::vector<SourceWeight> parts_;
  std::string name_;
  WeightUse use_;
  bool transpose_ = false;
  WeightCompute compute_;
  int64_t rows_ = 0, cols_ = 0;
  WeightRef inner_;
};

// The weights a spec names, in reading order.
class WeightLoadList {
 public:
  WeightRef Add(std::vector<SourceWeight> parts, std::string name, WeightUse use, bool transpose = false);
  WeightRef AddComputed(std::vector<SourceWeight> inputs, std::string name, WeightUse use, int64_t rows, int64_t cols,
                        WeightCompute compute);
  // Loads every weight in order (the first failure throws, naming its weight), each one's
  // temporaries freed before the next is read, and drops the host pointers.
  void LoadAll(Backend& backend);
  bool empty() const { return pending_.empty(); }

 private:
  std::vector<std::shared_ptr<DeferredWeight>> pending_;
};

}  // namespace perceiver
