// kernelCheck({ op, ... }): llm.c-style validate-then-time for the GPU kernels. The same op runs
// on the CPU backend (the reference) and on the CUDA backend with the same random inputs; the
// result gives the error between them and both timings. Off the main thread; without a usable
// GPU it rejects with a backend-unavailable error.
#include <chrono>
#include <cstring>
#include <memory>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/kernel_check_hooks.h"
#include "core/engine_error.h"
#include "core/fourier_features.h"
#include "napi/js_errors.h"
#include "napi/kernel_check.h"
#include "napi/promise_worker.h"

namespace perceiver {

namespace {

struct CheckSpec {
  std::string op;
  int64_t a = 0, b = 0, c = 0, d = 0, e = 0, f = 0;  // op-specific sizes (see RunOp)
  int iterations = 10;
  Precision precision = Precision::kFloat32;  // of the CUDA side; the CPU reference is float32
  // flash_attention: operand type (bfloat16 | float16), key-range splits (0: the plan's choice)
  // and how keys are padded ("mask": every 5th key of item 1; "lengths": item b keeps
  // nk - (b * nk) / (2 * batch) keys; "none").
  DType flash_dtype = DType::kBfloat16;
  int splits = 0;
  std::string keys = "mask";
  // layer_norm, bias_gelu: the output type, and whether a residual joins.
  DType output = DType::kFloat32;
  bool residual = false;
};

// IEEE binary16 / bfloat16 bits to float (the GPU side's 16-bit outputs, read back on the host).
float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ffu;
  float magnitude;
  if (exponent == 0) magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  else if (exponent == 31) magnitude = mantissa ? NAN : INFINITY;
  else magnitude = std::ldexp(static_cast<float>(mantissa | 0x400u), static_cast<int>(exponent) - 25);
  return sign ? -magnitude : magnitude;
}
float Bfloat16BitsToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

struct CheckResult {
  double max_abs_error = 0, relative_error = 0, cpu_ms = 0, gpu_ms = 0;
  int64_t outputs = 0;
};

std::vector<float> Random(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Host data placed in a backend's memory.
struct Placed {
  std::unique_ptr<BackendBuffer> buffer;
  float* data() { return buffer->data(); }
};

Placed Place(Backend& be, const std::vector<float>& host) {
  Placed p{be.Allocate(host.size())};
  be.CopyFromHost(p.data(), host.data(), host.size());
  return p;
}

// Runs op once on `be` with inputs derived from `seed`; returns the output on the host. When
// iterations > 0 also times that many runs (ms per run, synchronised).
std::vector<float> RunOp(Backend& be, const CheckSpec& s, unsigned seed, int iterations, double* ms, bool gpu) {
  std::mt19937 rng(seed);
  std::function<void()> op;
  std::vector<Placed> keep;
  std::vector<WeightRef> weights;
  Placed out;
  int64_t out_size = 0;
  // The GPU side of layer_norm and bias_gelu may write 16-bit values; the CPU reference writes float32.
  const DType out_dtype = gpu ? s.output : DType::kFloat32;
  const auto out_floats = [&](int64_t n) { return out_dtype == DType::kFloat32 ? n : (n + 1) / 2; };
  if (s.op == "layer_norm") {  // a = rows, b = dim; residual: a second input added first
    keep.push_back(Place(be, Random(s.a * s.b, rng, 3.0f)));
    const std::vector<float> gamma = Random(s.b, rng), beta = Random(s.b, rng);
    keep.push_back(Place(be, Random(s.a * s.b, rng, 1.0f)));
    weights.push_back(be.LoadWeight(HostWeight{gamma.data(), 1, s.b, "gamma"}, WeightUse::kValues));
    weights.push_back(be.LoadWeight(HostWeight{beta.data(), 1, s.b, "beta"}, WeightUse::kValues));
    out_size = s.a * s.b;
    out = Place(be, std::vector<float>(out_floats(out_size)));
    op = [&] {
      LayerNormOp ln;
      ln.x = keep[0].data();
      ln.rows = s.a;
      ln.dim = s.b;
      ln.ldx = s.b;
      if (s.residual) {
        ln.residual = keep[1].data();
        ln.ld_residual = s.b;
      }
      ln.gamma = weights[0].get();
      ln.beta = weights[1].get();
      ln.eps = 1e-5f;
      ln.y = out.data();
      ln.ldy = s.b;
      ln.y_dtype = out_dtype;
      be.Run(ln);
    };
  } else if (s.op == "bias_gelu") {  // a = rows, b = cols; residual: rows [r % 3] of a 3-row block added last
    const std::vector<float> acc = Random(s.a * s.b, rng, 2.0f), bias = Random(s.b, rng), residual = Random(3 * s.b, rng);
    out_size = s.a * s.b;
    if (gpu) {
      keep.push_back(Place(be, acc));
      keep.push_back(Place(be, bias));
      keep.push_back(Place(be, residual));
      out = Place(be, std::vector<float>(out_floats(out_size)));
      op = [&] {
        cuda_checks::BiasGelu(be, keep[0].data(), s.a, s.b, keep[1].data(), true, s.residual ? keep[2].data() : nullptr, 3, out_dtype,
                              out.data());
      };
    } else {  // the reference: the same formula on the host, in double
      auto host = std::make_shared<std::vector<float>>(static_cast<size_t>(out_size));
      out = Place(be, *host);
      op = [&, acc, bias, residual, host] {
        for (int64_t r = 0; r < s.a; ++r) {
          for (int64_t c = 0; c < s.b; ++c) {
            const double v = static_cast<double>(acc[r * s.b + c]) + bias[c];
            (*host)[r * s.b + c] = static_cast<float>(0.5 * v * std::erfc(-v / std::sqrt(2.0)) + (s.residual ? residual[(r % 3) * s.b + c] : 0.0));
          }
        }
        be.CopyFromHost(out.data(), host->data(), host->size());
      };
    }
  } else if (s.op == "fourier_features") {  // a x b grid, c bands; d > 0: every d-th flat index only (decoder points)
    FourierSpec spec;
    spec.num_bands = s.c;
    spec.max_resolution = {s.a, s.b};
    std::vector<int64_t> points;
    if (s.d > 0) {
      for (int64_t i = 0; i < s.a * s.b; i += s.d) points.push_back(i);
    }
    const int64_t n = points.empty() ? s.a * s.b : static_cast<int64_t>(points.size());
    out_size = n * spec.OutputChannels();
    out = Place(be, std::vector<float>(out_size));
    if (gpu) {
      op = [&, spec, points] { cuda_checks::FourierFeatures(be, {s.a, s.b}, spec.max_resolution, spec.num_bands, true, false, points, out.data()); };
    } else {
      op = [&, spec, points, n] {
        std::vector<float> host(static_cast<size_t>(out_size));
        FourierFeatures((points.empty() ? GridPositions({s.a, s.b}) : PointPositions(points, {s.a, s.b})).data(), n, spec, host.data());
        be.CopyFromHost(out.data(), host.data(), host.size());
      };
    }
  } else if (s.op == "gelu" || s.op == "linear") {  // a = rows, b = in, c = out (gelu: the linear's epilogue)
    keep.push_back(Place(be, Random(s.a * s.b, rng)));
    const std::vector<float> w = Random(s.c * s.b, rng, 1.0f / std::sqrt(static_cast<float>(s.b))), bias = Random(s.c, rng);
    weights.push_back(be.LoadWeight(HostWeight{w.data(), s.c, s.b, "weight"}, WeightUse::kMatrix));
    weights.push_back(be.LoadWeight(HostWeight{bias.data(), 1, s.c, "bias"}, WeightUse::kValues));
    out_size = s.a * s.c;
    out = Place(be, std::vector<float>(out_size));
    const bool gelu = s.op == "gelu";
    op = [&, gelu] {
      LinearOp linear;
      linear.x = keep[0].data();
      linear.rows = s.a;
      linear.ldx = s.b;
      linear.weight = weights[0].get();
      linear.bias = weights[1].get();
      linear.gelu = gelu;
      linear.y = out.data();
      linear.ldy = s.c;
      be.Run(linear);
    };
  } else if (s.op == "attention" || s.op == "flash_attention") {
    // a = batch, b = heads, c = nq, d = nk, e = dqk, f = dv; keys padded as s.keys says. flash_attention
    // runs the tensor-core kernel on the GPU side in s.flash_dtype with s.splits splits.
    const int64_t batch = s.a, heads = s.b, nq = s.c, nk = s.d, dqk = s.e, dv = s.f;
    keep.push_back(Place(be, Random(batch * nq * heads * dqk, rng)));
    keep.push_back(Place(be, Random(batch * nk * heads * dqk, rng)));
    keep.push_back(Place(be, Random(batch * nk * heads * dv, rng)));
    auto mask = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(batch * nk), 1);
    auto lengths = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(batch), nk);
    if (s.keys == "mask" && batch > 1) {
      for (int64_t j = 0; j < nk; j += 5) (*mask)[nk + j] = 0;
    }
    if (s.keys == "lengths") {
      for (int64_t b = 0; b < batch; ++b) (*lengths)[b] = std::max<int64_t>(1, nk - b * nk / (2 * batch));
    }
    out_size = batch * nq * heads * dv;
    out = Place(be, std::vector<float>(out_size));
    const bool flash = gpu && s.op == "flash_attention";
    op = [&, mask, lengths, batch, heads, nq, nk, dqk, dv, flash] {
      AttentionOp args;
      args.batch = batch;
      args.heads = heads;
      args.nq = nq;
      args.nk = nk;
      args.dqk = dqk;
      args.dv = dv;
      args.q = RowsView{keep[0].data(), heads * dqk, nq * heads * dqk};
      args.k = RowsView{keep[1].data(), heads * dqk, nk * heads * dqk};
      args.v = RowsView{keep[2].data(), heads * dv, nk * heads * dv};
      if (s.keys == "mask") args.key_mask = mask->data();  // host memory, as the backend contract says
      if (s.keys == "lengths") args.key_lengths = lengths->data();
      args.scale = 1.0f / std::sqrt(static_cast<float>(dqk));
      args.out = out.data();
      if (flash) {
        cuda_checks::FlashAttention(be, args, s.flash_dtype, s.splits);
      } else {
        be.Run(args);
      }
    };
  } else if (s.op == "conv2d") {  // a = batch, b = in_c, c = h (= w), d = out_c, e = kernel, f = stride
    const int64_t batch = s.a, in_c = s.b, h = s.c, out_c = s.d, k = s.e, stride = s.f;
    const int64_t pad = k / 2 + k % 2 - 1, oh = (h + pad + k / 2 - k) / stride + 1;
    keep.push_back(Place(be, Random(batch * in_c * h * h, rng)));
    const std::vector<float> w = Random(out_c * in_c * k * k, rng, 0.1f);
    weights.push_back(be.LoadWeight(HostWeight{w.data(), out_c, in_c * k * k, "weight"}, WeightUse::kMatrix));
    out_size = batch * oh * oh * out_c;
    out = Place(be, std::vector<float>(out_size));
    op = [&, batch, in_c, h, k, stride, pad, oh] {
      Conv2dOp conv;
      conv.x = keep[0].data();
      conv.batch = batch;
      conv.in_c = in_c;
      conv.h = h;
      conv.w = h;
      conv.weight = weights[0].get();
      conv.kh = k;
      conv.kw = k;
      conv.stride = stride;
      conv.pad_top = pad;
      conv.pad_left = pad;
      conv.out_h = oh;
      conv.out_w = oh;
      conv.y = out.data();
      be.Run(conv);
    };
  } else if (s.op == "strided_copy") {  // space-to-depth of [a, b, c, c] by blocks of d
    const int64_t batch = s.a, ch = s.b, h = s.c, blk = s.d, h2 = h / blk;
    keep.push_back(Place(be, Random(batch * ch * h * h, rng)));
    out_size = batch * ch * h * h;
    out = Place(be, std::vector<float>(out_size));
    op = [&, batch, ch, h, blk, h2] {
      const int64_t shape[6] = {batch, h2, h2, blk, blk, ch};
      const int64_t src[6] = {ch * h * h, blk * h, blk, h, 1, h * h};
      int64_t dst[6];
      dst[5] = 1;
      for (int i = 4; i >= 0; --i) dst[i] = dst[i + 1] * shape[i + 1];
      CopyOp copy;
      copy.dst = out.data();
      copy.src = keep[0].data();
      copy.rank = 6;
      for (int i = 0; i < 6; ++i) {
        copy.shape[i] = shape[i];
        copy.dst_strides[i] = dst[i];
        copy.src_strides[i] = src[i];
      }
      be.Run(copy);
    };
  } else {
    ThrowInvalidArgument("op", "layer_norm, bias_gelu, fourier_features, gelu, linear, attention, flash_attention, conv2d or strided_copy",
                         "\"" + s.op + "\"");
  }
  op();
  be.Synchronize();
  std::vector<float> host(static_cast<size_t>(out_size));
  if (out_dtype == DType::kFloat32) {
    be.CopyToHost(host.data(), out.data(), host.size());
  } else {
    std::vector<uint16_t> bits(static_cast<size_t>(out_floats(out_size)) * 2);
    be.CopyToHost(reinterpret_cast<float*>(bits.data()), out.data(), bits.size() / 2);
    for (size_t i = 0; i < host.size(); ++i) host[i] = out_dtype == DType::kBfloat16 ? Bfloat16BitsToFloat(bits[i]) : HalfBitsToFloat(bits[i]);
  }
  if (iterations > 0) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) op();
    be.Synchronize();
    *ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iterations;
  }
  return host;
}

// Both backends on the same random inputs: the error between them and each one's time.
CheckResult RunCheck(const CheckSpec& spec) {
  CheckResult result;
  std::unique_ptr<Backend> gpu = CreateCudaBackend(0, spec.precision);
  std::unique_ptr<Backend> cpu = CreateCpuBackend(Precision::kFloat32);
  const std::vector<float> want = RunOp(*cpu, spec, 7, spec.iterations, &result.cpu_ms, false);
  const std::vector<float> got = RunOp(*gpu, spec, 7, spec.iterations, &result.gpu_ms, true);
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    result.max_abs_error = std::max(result.max_abs_error, std::abs(d));
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  result.relative_error = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  result.outputs = static_cast<int64_t>(want.size());
  return result;
}

}  // namespace

Napi::Value KernelCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) ThrowInvalidArgument("kernelCheck({ op, sizes, iterations })", "an object", info.Length() < 1 ? "no argument" : DescribeJs(info[0]));
    Napi::Object o = info[0].As<Napi::Object>();
    CheckSpec s;
    Napi::Value op = o.Get("op");
    if (!op.IsString()) ThrowInvalidArgument("op", "a string", DescribeJs(op));
    s.op = op.As<Napi::String>().Utf8Value();
    Napi::Value sizes = o.Get("sizes");
    if (!sizes.IsArray()) ThrowInvalidArgument("sizes", "an array of up to 6 positive integers", DescribeJs(sizes));
    Napi::Array list = sizes.As<Napi::Array>();
    int64_t* fields[6] = {&s.a, &s.b, &s.c, &s.d, &s.e, &s.f};
    for (uint32_t i = 0; i < list.Length() && i < 6; ++i) {
      Napi::Value v = list.Get(i);
      const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 1 && d <= (1 << 24) && std::floor(d) == d)) ThrowInvalidArgument("sizes[" + std::to_string(i) + "]", "an integer in [1, 2^24]", DescribeJs(v));
      *fields[i] = static_cast<int64_t>(d);
    }
    Napi::Value dtype = o.Get("dtype");
    if (!dtype.IsUndefined()) {
      const std::string name = dtype.IsString() ? dtype.As<Napi::String>().Utf8Value() : "";
      if (name == "float32") s.precision = Precision::kFloat32;
      else if (name == "tfloat32") s.precision = Precision::kTfloat32;
      else if (name == "float16") s.precision = Precision::kFloat16;
      else if (name == "bfloat16") s.precision = Precision::kBfloat16;
      else ThrowInvalidArgument("dtype", "float32, tfloat32, float16 or bfloat16", DescribeJs(dtype));
    }
    // flash_attention: operand type (bfloat16 | float16, default bfloat16), splits, keys.
    Napi::Value operands = o.Get("operands");
    if (!operands.IsUndefined()) {
      const std::string name = operands.IsString() ? operands.As<Napi::String>().Utf8Value() : "";
      if (name == "bfloat16") s.flash_dtype = DType::kBfloat16;
      else if (name == "float16") s.flash_dtype = DType::kFloat16;
      else ThrowInvalidArgument("operands", "bfloat16 or float16", DescribeJs(operands));
    }
    Napi::Value splits = o.Get("splits");
    if (!splits.IsUndefined()) {
      const double d = splits.IsNumber() ? splits.As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 0 && d <= 256 && std::floor(d) == d)) ThrowInvalidArgument("splits", "an integer in [0, 256]", DescribeJs(splits));
      s.splits = static_cast<int>(d);
    }
    Napi::Value keys = o.Get("keys");
    if (!keys.IsUndefined()) {
      s.keys = keys.IsString() ? keys.As<Napi::String>().Utf8Value() : "";
      if (s.keys != "mask" && s.keys != "lengths" && s.keys != "none") ThrowInvalidArgument("keys", "mask, lengths or none", DescribeJs(keys));
    }
    Napi::Value output = o.Get("output");
    if (!output.IsUndefined()) {
      const std::string name = output.IsString() ? output.As<Napi::String>().Utf8Value() : "";
      if (name == "float32") s.output = DType::kFloat32;
      else if (name == "bfloat16") s.output = DType::kBfloat16;
      else if (name == "float16") s.output = DType::kFloat16;
      else ThrowInvalidArgument("output", "float32, bfloat16 or float16", DescribeJs(output));
    }
    Napi::Value residual = o.Get("residual");
    if (!residual.IsUndefined()) {
      if (!residual.IsBoolean()) ThrowInvalidArgument("residual", "a boolean", DescribeJs(residual));
      s.residual = residual.As<Napi::Boolean>().Value();
    }
    Napi::Value iterations = o.Get("iterations");
    if (iterations.IsNumber()) s.iterations = std::max(0, std::min(1000, iterations.As<Napi::Number>().Int32Value()));
    auto spec = std::make_shared<CheckSpec>(std::move(s));
    auto* worker = new PromiseWorker<CheckResult>(
        env, "perceiver-io:kernel-check", Napi::Object(), GetAddonState(env), [spec] { return RunCheck(*spec); },
        [spec](Napi::Env env, CheckResult& result) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("op", spec->op);
          out.Set("outputs", static_cast<double>(result.outputs));
          out.Set("maxAbsError", result.max_abs_error);
          out.Set("relativeError", result.relative_error);
          out.Set("cpuMs", result.cpu_ms);
          out.Set("gpuMs", result.gpu_ms);
          return out;
        });
    return worker->Start();
  });
}

}  // namespace perceiver
