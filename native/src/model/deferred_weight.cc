#include "model/deferred_weight.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#ifdef _WIN32
#include <io.h>
#include <windows.h>
#else
#include <unistd.h>
#endif

#include "core/engine_error.h"

namespace perceiver {

namespace {

size_t ElementBytes(FileDType dtype) {
  switch (dtype) {
    case FileDType::kFloat32: return 4;
    case FileDType::kFloat16:
    case FileDType::kBfloat16: return 2;
    case FileDType::kFloat64: return 8;
  }
  return 4;
}

[[noreturn]] void FailRead(const SourceWeight& source, const std::string& what_came) {
  ThrowWeightMismatch(source.name, "its values from the checkpoint file", what_came);
}

// Reads exactly `size` bytes at `offset` of `fd` (retrying interrupted and partial reads).
void ReadExactly(const SourceWeight& source, int fd, uint64_t offset, unsigned char* out, size_t size) {
  size_t done = 0;
  while (done < size) {
    const size_t want = std::min<size_t>(size - done, size_t{1} << 30);
#ifdef _WIN32
    OVERLAPPED at{};
    const uint64_t position = offset + done;
    at.Offset = static_cast<DWORD>(position & 0xffffffffu);
    at.OffsetHigh = static_cast<DWORD>(position >> 32);
    DWORD got = 0;
    HANDLE handle = reinterpret_cast<HANDLE>(_get_osfhandle(fd));
    if (handle == INVALID_HANDLE_VALUE) FailRead(source, "the file is not open");
    if (!ReadFile(handle, out + done, static_cast<DWORD>(want), &got, &at)) FailRead(source, "read error " + std::to_string(GetLastError()));
    const int64_t n = static_cast<int64_t>(got);
#else
    const ssize_t n = ::pread(fd, out + done, want, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) FailRead(source, std::string("a read error: ") + std::strerror(errno));
#endif
    if (n == 0) FailRead(source, "the end of the file before them (was it changed while loading?)");
    done += static_cast<size_t>(n);
  }
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // Inf / NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    // Subnormal: normalise the mantissa.
    int e = -1;
    do {
      ++e;
      mantissa <<= 1;
    } while ((mantissa & 0x400u) == 0);
    bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

std::vector<float> ReadWeightFile(const SourceWeight& source) {
  const WeightFileRange& file = *source.file;
  const int64_t count = source.rows * source.cols;
  if (file.count != count || count < 0) ThrowWeightMismatch(source.name, std::to_string(count) + " values", "a checkpoint file range of " + std::to_string(file.count));
  std::vector<float> values(static_cast<size_t>(count));
  const size_t element = ElementBytes(file.dtype);
  if (file.dtype == FileDType::kFloat32) {
    ReadExactly(source, file.fd, file.offset, reinterpret_cast<unsigned char*>(values.data()), values.size() * 4);
    return values;
  }
  std::vector<unsigned char> raw(values.size() * element);
  ReadExactly(source, file.fd, file.offset, raw.data(), raw.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const unsigned char* at = raw.data() + i * element;
    if (file.dtype == FileDType::kFloat64) {
      double d;
      std::memcpy(&d, at, 8);
      // Doubles that round beyond the largest float (from halfway to the next power up) become
      // infinities (refused by the finite check), as JavaScript's Float32Array makes them; the
      // cast alone is undefined for them.
      constexpr double kOverflow = static_cast<double>(std::numeric_limits<float>::max()) + 0x1p103;
      constexpr float kInf = std::numeric_limits<float>::infinity();
      values[i] = d >= kOverflow ? kInf : d <= -kOverflow ? -kInf : static_cast<float>(d);
    } else {
      uint16_t h;
      std::memcpy(&h, at, 2);
      if (file.dtype == FileDType::kFloat16) {
        values[i] = HalfToFloat(h);
      } else {
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(&values[i], &bits, 4);
      }
    }
  }
  return values;
}

DeferredWeight::DeferredWeight(std::vector<SourceWeight> parts, std::string name, WeightUse use, bool transpose)
    : parts_(std::move(parts)), name_(std::move(name)), use_(use), transpose_(transpose) {
  cols_ = parts_.empty() ? 0 : parts_[0].cols;
  for (const SourceWeight& p : parts_) rows_ += p.rows;
  if (transpose_) std::swap(rows_, cols_);
  if (use_ == WeightUse::kValues && cols_ == 1 && parts_.size() > 1) std::swap(rows_, cols_);  // a stacked bias: [1, n]
}

DeferredWeight::DeferredWeight(std::vector<SourceWeight> inputs, std::string name, WeightUse use, int64_t rows, int64_t cols,
                               WeightCompute compute)
    : parts_(std::move(inputs)), name_(std::move(name)), use_(use), compute_(std::move(compute)), rows_(rows), cols_(cols) {}

void DeferredWeight::Load(Backend& backend) {
  // Each part's float32 values: JavaScript memory as it is, or read from the checkpoint file.
  std::vector<std::vector<float>> read;
  read.reserve(parts_.size());
  std::vector<const float*> values;
  for (const SourceWeight& p : parts_) {
    if (p.file) {
      read.push_back(ReadWeightFile(p));
      values.push_back(read.back().data());
    } else {
      values.push_back(p.data);
    }
  }
  if (compute_) {
    const std::vector<float> computed = compute_(values);
    inner_ = backend.LoadWeight(HostWeight{computed.data(), rows_, cols_, name_}, use_);
  } else if (transpose_) {
    const SourceWeight& p = parts_.at(0);
    std::vector<float> t(static_cast<size_t>(p.rows * p.cols));
    for (int64_t r = 0; r < p.rows; ++r) {
      for (int64_t c = 0; c < p.cols; ++c) t[c * p.rows + r] = values[0][r * p.cols + c];
    }
    inner_ = backend.LoadWeight(HostWeight{t.data(), rows_, cols_, name_}, use_);
  } else if (parts_.size() == 1 && values[0] != nullptr) {
    inner_ = backend.LoadWeight(HostWeight{values[0], rows_, cols_, name_}, use_);
  } else {
    // Parts are stacked by rows, so each one's values follow the previous part's.
    std::vector<float> joined(static_cast<size_t>(rows_ * cols_), 0.0f);
    size_t offset = 0;
    for (size_t i = 0; i < parts_.size(); ++i) {
      const size_t n = static_cast<size_t>(parts_[i].rows * parts_[i].cols);
      if (values[i] != nullptr) std::memcpy(joined.data() + offset, values[i], sizeof(float) * n);
      offset += n;
    }
    inner_ = backend.LoadWeight(HostWeight{joined.data(), rows_, cols_, name_}, use_);
  }
  parts_.clear();  // neither JavaScript memory nor the file is read again
  compute_ = nullptr;
}

WeightRef WeightLoadList::Add(std::vector<SourceWeight> parts, std::string name, WeightUse use, bool transpose) {
  auto w = std::make_shared<DeferredWeight>(std::move(parts), std::move(name), use, transpose);
  pending_.push_back(w);
  return w;
}

WeightRef WeightLoadList::AddComputed(std::vector<SourceWeight> inputs, std::string name, WeightUse use, int64_t rows, int64_t cols,
                                      WeightCompute compute) {
  auto w = std::make_shared<DeferredWeight>(std::move(inputs), std::move(name), use, rows, cols, std::move(compute));
  pending_.push_back(w);
  return w;
}

void WeightLoadList::LoadAll(Backend& backend) {
  for (const auto& w : pending_) w->Load(backend);
  pending_.clear();
}

}  // namespace perceiver
