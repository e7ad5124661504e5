// The field readers the generated spec reader (napi/spec_nodes.h) is made of: each reads one field
// of a JavaScript object, or throws an invalid-argument EngineError naming the field's path, what
// the declaration allows and what came. Header-only: the generated header is its one user.
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "core/engine_error.h"
#include "napi/js_errors.h"

namespace perceiver::spec {

// A checkpoint tensor named by the spec (empty name: a nullable weight left out), and the spec
// field that named it, for errors.
struct WeightName {
  std::string name;
  std::string field;
  bool present() const { return !name.empty(); }
};

inline std::string JoinPath(const std::string& path, const char* key) { return path + "." + key; }

class SpecFields {
 public:
  // Dimensions are bounded so that every product and BLAS argument fits comfortably.
  static constexpr int64_t kMaxDim = int64_t{1} << 24;
  // Nodes nest (a multimodal preprocessor holds preprocessors) and are read recursively: the path
  // of a nested node grows with its depth, and bounding it bounds the recursion, so a hostile
  // object nested thousands deep is refused rather than overflowing the stack. A real spec's
  // longest path is under 100 characters.
  static constexpr size_t kMaxPath = 1024;

  bool Present(const Napi::Object& o, const char* key) const {
    Napi::Value v = o.Get(key);
    return !v.IsNull() && !v.IsUndefined();
  }

  int64_t Dim(const Napi::Object& o, const char* key, const std::string& path, int64_t min) const { return DimValue(o.Get(key), JoinPath(path, key), min); }

  double Number(const Napi::Object& o, const char* key, const std::string& path, double min, double max) const {
    Napi::Value v = o.Get(key);
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!(d >= min && d <= max)) {
      std::ostringstream range;
      range << "a number in [" << min << ", " << max << "]";
      ThrowInvalidArgument(JoinPath(path, key), range.str(), DescribeJs(v));
    }
    return d;
  }

  bool Bool(const Napi::Object& o, const char* key, const std::string& path) const {
    Napi::Value v = o.Get(key);
    if (!v.IsBoolean()) ThrowInvalidArgument(JoinPath(path, key), "a boolean", DescribeJs(v));
    return v.As<Napi::Boolean>().Value();
  }

  std::string Str(const Napi::Object& o, const char* key, const std::string& path) const {
    Napi::Value v = o.Get(key);
    if (!v.IsString()) ThrowInvalidArgument(JoinPath(path, key), "a string", DescribeJs(v));
    return v.As<Napi::String>().Utf8Value();
  }

  // The index of the value among `values`.
  int Enum(const Napi::Object& o, const char* key, const std::string& path, std::initializer_list<const char*> values) const {
    Napi::Value v = o.Get(key);
    const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
    int i = 0;
    std::string list;
    for (const char* value : values) {
      if (v.IsString() && s == value) return i;
      list += (i++ ? ", " : "") + std::string(value);
    }
    ThrowInvalidArgument(JoinPath(path, key), "one of " + list, DescribeJs(v));
  }

  [[noreturn]] void Unknown(const std::string& field, const std::string& allowed, const std::string& tag) const {
    ThrowInvalidArgument(field, "one of " + allowed, "\"" + tag + "\"");
  }

  Napi::Object Object(const Napi::Object& o, const char* key, const std::string& path) const {
    CheckDepth(path);
    Napi::Value v = o.Get(key);
    if (!v.IsObject() || v.IsArray()) ThrowInvalidArgument(JoinPath(path, key), "an object", DescribeJs(v));
    return v.As<Napi::Object>();
  }

  Napi::Array Array(const Napi::Object& o, const char* key, const std::string& path) const {
    Napi::Value v = o.Get(key);
    if (!v.IsArray()) ThrowInvalidArgument(JoinPath(path, key), "an array", DescribeJs(v));
    return v.As<Napi::Array>();
  }

  Napi::Object Element(const Napi::Array& a, uint32_t i, const std::string& path) const {
    CheckDepth(path);
    Napi::Value v = a.Get(i);
    if (!v.IsObject() || v.IsArray()) ThrowInvalidArgument(path + "[" + std::to_string(i) + "]", "an object", DescribeJs(v));
    return v.As<Napi::Object>();
  }

  // 1 to 4 dimensions whose product stays under 2^30.
  std::vector<int64_t> Dims(const Napi::Object& o, const char* key, const std::string& path) const {
    const std::string field = JoinPath(path, key);
    Napi::Array a = Array(o, key, path);
    if (a.Length() < 1 || a.Length() > 4) ThrowInvalidArgument(field, "1 to 4 dimensions", std::to_string(a.Length()));
    std::vector<int64_t> dims;
    int64_t n = 1;
    for (uint32_t i = 0; i < a.Length(); ++i) {
      dims.push_back(DimValue(a.Get(i), field + "[" + std::to_string(i) + "]", 1));
      n *= dims.back();
      if (n > kMaxDim * 64) ThrowInvalidArgument(field, "at most 2^30 points", "more");
    }
    return dims;
  }

  WeightName Weight(const Napi::Object& o, const char* key, const std::string& path) const { return {Str(o, key, path), JoinPath(path, key)}; }

 private:
  static void CheckDepth(const std::string& path) {
    if (path.size() > kMaxPath) ThrowInvalidArgument(path.substr(0, 64) + "...", "a spec nested at most a few levels deep", "a path of " + std::to_string(path.size()) + " characters");
  }

  static int64_t DimValue(const Napi::Value& v, const std::string& field, int64_t min) {
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1.0;
    if (!v.IsNumber() || !(d >= static_cast<double>(min) && d <= static_cast<double>(kMaxDim) && std::floor(d) == d)) {
      ThrowInvalidArgument(field, "an integer in [" + std::to_string(min) + ", 2^24]", DescribeJs(v));
    }
    return static_cast<int64_t>(d);
  }
};

}  // namespace perceiver::spec
