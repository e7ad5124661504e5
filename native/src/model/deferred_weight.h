// Weights named while a model's spec is read (on the main thread, where JavaScript objects can be
// read) and loaded into the backend later, all at once, on a worker thread: copying, packing and
// checking hundreds of megabytes never blocks the event loop. Until LoadAll() the weight knows
// its shape and use only; afterwards it forwards to the backend's weight.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace perceiver {

class DeferredWeight final : public Weight {
 public:
  // parts are stacked by rows (fused projections); a part with null data is zeros. owned, when
  // given, is host memory the parts point into (values computed while reading the spec).
  // transpose: load the (single) part transposed, [cols, rows].
  DeferredWeight(std::vector<HostWeight> parts, std::string name, WeightUse use, std::vector<float> owned = {},
                 bool transpose = false);

  DType dtype() const override { return inner_ ? inner_->dtype() : DType::kFloat32; }
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  WeightUse use() const override { return use_; }
  const float* values() const override { return inner_ ? inner_->values() : nullptr; }
  const Weight& resolved() const override { return inner_ ? inner_->resolved() : *this; }

  // Loads the weight into `backend` (a stacked weight is joined in a temporary host copy first).
  void Load(Backend& backend);

 private:
  std::vector<HostWeight> parts_;
  std::string name_;
  WeightUse use_;
  std::vector<float> owned_;
  bool transpose_ = false;
  int64_t rows_ = 0, cols_ = 0;
  WeightRef inner_;
};

// The weights a spec names, in reading order.
class WeightLoadList {
 public:
  WeightRef Add(std::vector<HostWeight> parts, std::string name, WeightUse use, std::vector<float> owned = {},
                bool transpose = false);
  // Loads every weight (the first failure throws, naming its weight) and drops the host pointers.
  void LoadAll(Backend& backend);
  bool empty() const { return pending_.empty(); }

 private:
  std::vector<std::shared_ptr<DeferredWeight>> pending_;
};

}  // namespace perceiver
