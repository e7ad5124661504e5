// engineOpCheck({ op, sizes, options }): runs one of the fused backend ops on the CPU backend with
// random inputs laid out the way the graph lays them out (strided rows, column blocks of a fused
// QKV / KV buffer, a block shared across the batch, per-item key lengths or a general mask) and
// compares it with a plain double-precision reference written here from the op's definition in
// backend.h. Returns the worst relative error (over the output's norm) and the worst absolute
// one. Off the main thread. Used by test/engine-ops.test.ts.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/engine_error.h"
#include "napi/addon_state.h"
#include "napi/engine_op_check.h"
#include "napi/js_errors.h"
#include "napi/promise_worker.h"

namespace perceiver {

namespace {

struct OpCheck {
  std::string op;
  std::vector<int64_t> sizes;
  bool gelu = false, residual = false, shared = false, fused = false, probs = false;
  std::string padding = "none";  // none | lengths | mask
  unsigned seed = 1;
};

struct OpCheckResult {
  double relative_error = 0, max_abs_error = 0;
  int64_t outputs = 0;
};

std::vector<float> Random(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

double Gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

void Compare(const std::vector<float>& got, const std::vector<double>& want, OpCheckResult* r) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    r->max_abs_error = std::max(r->max_abs_error, std::abs(d));
    num += d * d;
    den += want[i] * want[i];
  }
  r->relative_error = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  r->outputs = static_cast<int64_t>(want.size());
}

int64_t Size(const OpCheck& c, size_t i) {
  if (i >= c.sizes.size()) ThrowInvalidArgument("sizes", "at least " + std::to_string(i + 1) + " sizes for op " + c.op, std::to_string(c.sizes.size()));
  return c.sizes[i];
}

// y[rows, out] with row strides padded, so nothing assumes contiguous rows.
OpCheckResult CheckLinear(Backend& be, const OpCheck& c) {
  const int64_t rows = Size(c, 0), in = Size(c, 1), out = Size(c, 2);
  const int64_t period = c.shared ? Size(c, 3) : 0;
  if (period != 0 && rows % period != 0) ThrowInvalidArgument("sizes", "rows a multiple of the period " + std::to_string(period), std::to_string(rows) + " rows");
  std::mt19937 rng(c.seed);
  const int64_t ldx = in + 3, ldy = out + 2, ldr = out + 5, res_rows = period ? period : rows;
  std::vector<float> x = Random(static_cast<size_t>(rows * ldx), rng), w = Random(static_cast<size_t>(out * in), rng, 1.0f / std::sqrt(static_cast<float>(in)));
  std::vector<float> bias = Random(static_cast<size_t>(out), rng), residual = Random(static_cast<size_t>(res_rows * ldr), rng);
  WeightRef weight = be.LoadWeight(HostWeight{w.data(), out, in, "w"}, WeightUse::kMatrix);
  WeightRef b = be.LoadWeight(HostWeight{bias.data(), 1, out, "b"}, WeightUse::kValues);
  std::vector<float> y(static_cast<size_t>(rows * ldy), 0.0f);
  LinearOp op;
  op.x = x.data();
  op.rows = rows;
  op.ldx = ldx;
  op.weight = weight.get();
  op.bias = b.get();
  op.gelu = c.gelu;
  if (c.residual) {
    op.residual = residual.data();
    op.ld_residual = ldr;
    op.residual_period = period;
  }
  op.y = y.data();
  op.ldy = ldy;
  be.Run(op);
  std::vector<float> got;
  std::vector<double> want;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = bias[o];
      for (int64_t i = 0; i < in; ++i) acc += static_cast<double>(x[r * ldx + i]) * w[o * in + i];
      if (c.gelu) acc = Gelu(acc);
      if (c.residual) acc += residual[(period ? r % period : r) * ldr + o];
      want.push_back(acc);
      got.push_back(y[r * ldy + o]);
    }
  }
  OpCheckResult result;
  Compare(got, want, &result);
  return result;
}

OpCheckResult CheckLayerNorm(Backend& be, const OpCheck& c) {
  const int64_t rows = Size(c, 0), dim = Size(c, 1);
  std::mt19937 rng(c.seed);
  const int64_t ldx = dim + 1, ldr = dim + 7, ldy = dim + 4;
  std::vector<float> x = Random(static_cast<size_t>(rows * ldx), rng, 3.0f), residual = Random(static_cast<size_t>(rows * ldr), rng);
  for (int64_t r = 0; r < rows; ++r) x[r * ldx] += 100.0f;  // a large mean: the variance must not cancel
  std::vector<float> gamma = Random(static_cast<size_t>(dim), rng), beta = Random(static_cast<size_t>(dim), rng);
  WeightRef g = be.LoadWeight(HostWeight{gamma.data(), 1, dim, "gamma"}, WeightUse::kValues);
  WeightRef b = be.LoadWeight(HostWeight{beta.data(), 1, dim, "beta"}, WeightUse::kValues);
  std::vector<float> y(static_cast<size_t>(rows * ldy));
  LayerNormOp op;
  op.x = x.data();
  op.rows = rows;
  op.dim = dim;
  op.ldx = ldx;
  if (c.residual) {
    op.residual = residual.data();
    op.ld_residual = ldr;
  }
  op.gamma = g.get();
  op.beta = b.get();
  op.eps = 1e-5f;
  op.y = y.data();
  op.ldy = ldy;
  be.Run(op);
  std::vector<float> got;
  std::vector<double> want;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> s(static_cast<size_t>(dim));
    double mean = 0, var = 0;
    for (int64_t i = 0; i < dim; ++i) mean += s[i] = x[r * ldx + i] + (c.residual ? residual[r * ldr + i] : 0.0);
    mean /= dim;
    for (int64_t i = 0; i < dim; ++i) var += (s[i] - mean) * (s[i] - mean);
    var /= dim;
    for (int64_t i = 0; i < dim; ++i) {
      want.push_back((s[i] - mean) / std::sqrt(var + 1e-5) * gamma[i] + beta[i]);
      got.push_back(y[r * ldy + i]);
    }
  }
  OpCheckResult result;
  Compare(got, want, &result);
  return result;
}

// fused: q, k and v are column blocks of one [batch, n, heads * (2 dqk + dv)] buffer (self-
// attention, nq = nk). Otherwise k and v are column blocks of one KV buffer and q is its own,
// shared by the batch (batch stride 0) when `shared`.
OpCheckResult CheckAttention(Backend& be, const OpCheck& c) {
  const int64_t batch = Size(c, 0), heads = Size(c, 1), nq = Size(c, 2), nk = Size(c, 3), dqk = Size(c, 4), dv = Size(c, 5);
  if (c.fused && nq != nk) ThrowInvalidArgument("sizes", "nq == nk for a fused QKV buffer", "nq " + std::to_string(nq) + ", nk " + std::to_string(nk));
  std::mt19937 rng(c.seed);
  const int64_t wq = heads * dqk, wv = heads * dv;
  std::vector<float> qkv, q, kv;
  AttentionOp op;
  op.batch = batch;
  op.heads = heads;
  op.nq = nq;
  op.nk = nk;
  op.dqk = dqk;
  op.dv = dv;
  op.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dqk)));
  if (c.fused) {
    const int64_t width = 2 * wq + wv;
    qkv = Random(static_cast<size_t>(batch * nk * width), rng);
    op.q = RowsView{qkv.data(), width, nk * width};
    op.k = RowsView{qkv.data() + wq, width, nk * width};
    op.v = RowsView{qkv.data() + 2 * wq, width, nk * width};
  } else {
    const int64_t width = wq + wv;
    kv = Random(static_cast<size_t>(batch * nk * width), rng);
    q = Random(static_cast<size_t>((c.shared ? 1 : batch) * nq * wq), rng);
    op.q = RowsView{q.data(), wq, c.shared ? 0 : nq * wq};
    op.k = RowsView{kv.data(), width, nk * width};
    op.v = RowsView{kv.data() + wq, width, nk * width};
  }
  std::vector<int64_t> lengths;
  std::vector<uint8_t> mask(static_cast<size_t>(batch * nk), 1);
  for (int64_t b = 0; b < batch; ++b) {
    if (c.padding == "lengths") {
      lengths.push_back(std::max<int64_t>(1, nk - (b * 7) % nk));
      for (int64_t j = lengths.back(); j < nk; ++j) mask[b * nk + j] = 0;
    } else if (c.padding == "mask") {
      for (int64_t j = 1 + b; j < nk; j += 3 + b) mask[b * nk + j] = 0;  // holes, the first key kept
    }
  }
  if (c.padding == "lengths") op.key_lengths = lengths.data();
  if (c.padding == "mask") op.key_mask = mask.data();
  std::vector<float> out(static_cast<size_t>(batch * nq * wv)), probs;
  op.out = out.data();
  if (c.probs) {
    probs.resize(static_cast<size_t>(batch * heads * nq * nk));
    op.probs = probs.data();
  }
  be.Run(op);
  std::vector<float> got;
  std::vector<double> want;
  std::vector<double> p(static_cast<size_t>(nk));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < nq; ++i) {
        const float* qi = op.q.data + b * op.q.batch_stride + i * op.q.ld + h * dqk;
        double max_s = -INFINITY;
        for (int64_t j = 0; j < nk; ++j) {
          if (!mask[b * nk + j]) continue;
          const float* kj = op.k.data + b * op.k.batch_stride + j * op.k.ld + h * dqk;
          double s = 0;
          for (int64_t d = 0; d < dqk; ++d) s += static_cast<double>(qi[d]) * kj[d];
          p[j] = s * op.scale;
          max_s = std::max(max_s, p[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < nk; ++j) sum += p[j] = mask[b * nk + j] ? std::exp(p[j] - max_s) : 0.0;
        for (int64_t d = 0; d < dv; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < nk; ++j) acc += p[j] / sum * op.v.data[b * op.v.batch_stride + j * op.v.ld + h * dv + d];
          want.push_back(acc);
          got.push_back(out[(b * nq + i) * wv + h * dv + d]);
        }
        if (c.probs) {
          for (int64_t j = 0; j < nk; ++j) {
            want.push_back(p[j] / sum);
            got.push_back(probs[((b * heads + h) * nq + i) * nk + j]);
          }
        }
      }
    }
  }
  OpCheckResult result;
  Compare(got, want, &result);
  return result;
}

}  // namespace

Napi::Value EngineOpCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardJs(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) ThrowInvalidArgument("engineOpCheck({ op, sizes, ... })", "an object", info.Length() < 1 ? "no argument" : DescribeJs(info[0]));
    Napi::Object o = info[0].As<Napi::Object>();
    auto check = std::make_shared<OpCheck>();
    Napi::Value op = o.Get("op");
    if (!op.IsString()) ThrowInvalidArgument("op", "linear, layer_norm or attention", DescribeJs(op));
    check->op = op.As<Napi::String>().Utf8Value();
    Napi::Value sizes = o.Get("sizes");
    if (!sizes.IsArray()) ThrowInvalidArgument("sizes", "an array of positive integers", DescribeJs(sizes));
    Napi::Array list = sizes.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length() && i < 8; ++i) {
      Napi::Value v = list.Get(i);
      const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 0 && d <= 16384 && std::floor(d) == d)) ThrowInvalidArgument("sizes[" + std::to_string(i) + "]", "an integer in [0, 16384]", DescribeJs(v));
      check->sizes.push_back(static_cast<int64_t>(d));
    }
    double work = 1;  // the reference is naive: bound what one check may cost
    for (int64_t s : check->sizes) {
      if (s == 0 && check->op != "linear") ThrowInvalidArgument("sizes", "positive integers for op " + check->op, "0");
      work *= std::max<int64_t>(1, s);
    }
    if (work > 2e10) ThrowInvalidArgument("sizes", "a product of at most 2e10 (the work of a reference check)", std::to_string(work));
    check->gelu = o.Get("gelu").ToBoolean().Value();
    check->residual = o.Get("residual").ToBoolean().Value();
    check->shared = o.Get("shared").ToBoolean().Value();
    check->fused = o.Get("fused").ToBoolean().Value();
    check->probs = o.Get("probs").ToBoolean().Value();
    Napi::Value padding = o.Get("padding");
    if (padding.IsString()) check->padding = padding.As<Napi::String>().Utf8Value();
    if (check->padding != "none" && check->padding != "lengths" && check->padding != "mask") {
      ThrowInvalidArgument("padding", "none, lengths or mask", DescribeJs(padding));
    }
    Napi::Value seed = o.Get("seed");
    if (seed.IsNumber()) check->seed = seed.As<Napi::Number>().Uint32Value();
    Napi::Value dtype = o.Get("dtype");
    const Precision precision = dtype.IsString() && dtype.As<Napi::String>().Utf8Value() == "bfloat16" ? Precision::kBfloat16 : Precision::kFloat32;
    Napi::Object holder = Napi::Object::New(env);
    auto* worker = new PromiseWorker<OpCheckResult>(
        env, "perceiver-io:engine-op-check", holder, GetAddonState(env),
        [check, precision]() {
          std::unique_ptr<Backend> be = CreateCpuBackend(precision);
          if (check->op == "linear") return CheckLinear(*be, *check);
          if (check->op == "layer_norm") return CheckLayerNorm(*be, *check);
          if (check->op == "attention") return CheckAttention(*be, *check);
          ThrowInvalidArgument("op", "linear, layer_norm or attention", "\"" + check->op + "\"");
        },
        [](Napi::Env env, OpCheckResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("relativeError", r.relative_error);
          out.Set("maxAbsError", r.max_abs_error);
          out.Set("outputs", static_cast<double>(r.outputs));
          return out;
        });
    return worker->Start();
  });
}

}  // namespace perceiver
