#include "model/deferred_weight.h"

#include <algorithm>
#include <cstring>

namespace perceiver {

DeferredWeight::DeferredWeight(std::vector<HostWeight> parts, std::string name, WeightUse use, std::vector<float> owned,
                               bool transpose)
    : parts_(std::move(parts)), name_(std::move(name)), use_(use), owned_(std::move(owned)), transpose_(transpose) {
  cols_ = parts_.empty() ? 0 : parts_[0].cols;
  for (const HostWeight& p : parts_) rows_ += p.rows;
  if (transpose_) std::swap(rows_, cols_);
  if (use_ == WeightUse::kValues && cols_ == 1 && parts_.size() > 1) std::swap(rows_, cols_);  // a stacked bias: [1, n]
}

void DeferredWeight::Load(Backend& backend) {
  if (transpose_) {
    const HostWeight& p = parts_.at(0);
    std::vector<float> t(static_cast<size_t>(p.rows * p.cols));
    for (int64_t r = 0; r < p.rows; ++r) {
      for (int64_t c = 0; c < p.cols; ++c) t[c * p.rows + r] = p.data[r * p.cols + c];
    }
    inner_ = backend.LoadWeight(HostWeight{t.data(), rows_, cols_, name_}, use_);
  } else if (parts_.size() == 1 && parts_[0].data != nullptr) {
    HostWeight host = parts_[0];
    host.name = name_;
    inner_ = backend.LoadWeight(host, use_);
  } else {
    // Parts are stacked by rows, so each one's values follow the previous part's.
    std::vector<float> joined(static_cast<size_t>(rows_ * cols_), 0.0f);
    size_t offset = 0;
    for (const HostWeight& p : parts_) {
      const size_t n = static_cast<size_t>(p.rows * p.cols);
      if (p.data != nullptr) std::memcpy(joined.data() + offset, p.data, sizeof(float) * n);
      offset += n;
    }
    inner_ = backend.LoadWeight(HostWeight{joined.data(), rows_, cols_, name_}, use_);
  }
  parts_.clear();  // JavaScript memory is not read again
  owned_.clear();
  owned_.shrink_to_fit();
}

WeightRef WeightLoadList::Add(std::vector<HostWeight> parts, std::string name, WeightUse use, std::vector<float> owned,
                              bool transpose) {
  auto w = std::make_shared<DeferredWeight>(std::move(parts), std::move(name), use, std::move(owned), transpose);
  pending_.push_back(w);
  return w;
}

void WeightLoadList::LoadAll(Backend& backend) {
  for (const auto& w : pending_) w->Load(backend);
  pending_.clear();
}

}  // namespace perceiver
