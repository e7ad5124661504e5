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
#include "core/engine_error.h"
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
};

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
std::vector<float> RunOp(Backend& be, const CheckSpec& s, unsigned seed, int iterations, double* ms) {
  std::mt19937 rng(seed);
  std::function<void()> op;
  std::vector<Placed> keep;
  std::vector<WeightRef> weights;
  Placed out;
  int64_t out_size = 0;
  if (s.op == "layer_norm") {  // a = rows, b = dim
    keep.push_back(Place(be, Random(s.a * s.b, rng, 3.0f)));
    const std::vector<float> gamma = Random(s.b, rng), beta = Random(s.b, rng);
    weights.push_back(be.LoadWeight(HostWeight{gamma.data(), 1, s.b, "gamma"}, WeightUse::kValues));
    weights.push_back(be.LoadWeight(HostWeight{beta.data(), 1, s.b, "beta"}, WeightUse::kValues));
    out_size = s.a * s.b;
    out = Place(be, std::vector<float>(out_size));
    op = [&] {
      LayerNormOp ln;
      ln.x = keep[0].data();
      ln.rows = s.a;
      ln.dim = s.b;
      ln.ldx = s.b;
      ln.gamma = weights[0].get();
      ln.beta = weights[1].get();
      ln.eps = 1e-5f;
      ln.y = out.data();
      ln.ldy = s.b;
      be.Run(ln);
    };
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
  } else if (s.op == "attention") {  // a = batch, b = heads, c = nq, d = nk, e = dqk, f = dv; every 5th key of item 1 masked
    const int64_t batch = s.a, heads = s.b, nq = s.c, nk = s.d, dqk = s.e, dv = s.f;
    keep.push_back(Place(be, Random(batch * nq * heads * dqk, rng)));
    keep.push_back(Place(be, Random(batch * nk * heads * dqk, rng)));
    keep.push_back(Place(be, Random(batch * nk * heads * dv, rng)));
    auto mask = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(batch * nk), 1);
    if (batch > 1) {
      for (int64_t j = 0; j < nk; j += 5) (*mask)[nk + j] = 0;
    }
    out_size = batch * nq * heads * dv;
    out = Place(be, std::vector<float>(out_size));
    op = [&, mask, batch, heads, nq, nk, dqk, dv] {
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
      args.key_mask = mask->data();  // host memory, as the backend contract says
      args.scale = 1.0f / std::sqrt(static_cast<float>(dqk));
      args.out = out.data();
      be.Run(args);
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
    ThrowInvalidArgument("op", "layer_norm, gelu, linear, attention, conv2d or strided_copy", "\"" + s.op + "\"");
  }
  op();
  be.Synchronize();
  std::vector<float> host(static_cast<size_t>(out_size));
  be.CopyToHost(host.data(), out.data(), host.size());
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
  const std::vector<float> want = RunOp(*cpu, spec, 7, spec.iterations, &result.cpu_ms);
  const std::vector<float> got = RunOp(*gpu, spec, 7, spec.iterations, &result.gpu_ms);
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
