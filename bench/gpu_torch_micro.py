"""PyTorch micro-benchmarks on the GPU machine, for calibration beside perceiver-io's per-op
profile (bench/gpu-check.sh): what cuBLASLt (through torch.matmul / F.linear) and SDPA reach on
this card for the very product and attention shapes of the speed cases (bench/gpu.ts), in bf16
and float32. One JSON line per shape: {"case": "torch-micro", "op", "what", "shape", "ms", "tflops"}.
  python3 bench/gpu_torch_micro.py [budget_seconds]
"""
import json
import sys
import time

import torch
import torch.nn.functional as F

torch.set_grad_enabled(False)
torch.backends.cuda.matmul.allow_tf32 = False  # float32 stays float32, as our float32 mode
BUDGET = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
T0 = time.time()
dev = "cuda"


def emit(**kw):
    kw["t"] = round(time.time() - T0, 1)
    print(json.dumps(kw), flush=True)


def timeit(fn, warm=2, iters=6):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


# y[M, N] = x[M, K] W^T + b: the products of the speed cases (fused QKV / KV as ours are).
LINEAR = [
    ("language b64 self-attention qkv", 64 * 256, 1280, 256 + 256 + 1280),
    ("language b64 self-attention output / mlp", 64 * 256, 1280, 1280),
    ("language b64 cross-attention kv", 64 * 2048, 768, 256 + 1280),
    ("language b64 decoder query", 64 * 2048, 768, 256),
    ("language b1 self-attention qkv", 256, 1280, 1792),
    ("vision b32 self-attention qkv", 32 * 512, 1024, 3 * 1024),
    ("vision b32 self-attention output / mlp", 32 * 512, 1024, 1024),
    ("vision-learned b32 cross-attention kv", 32 * 50176, 512, 2048),
]
# (what, batch, heads, nq, nk, dqk, dv) per head.
ATTENTION = [
    ("language b64 self-attention", 64, 8, 256, 256, 32, 160),
    ("language b64 cross-attention", 64, 8, 256, 2048, 32, 160),
    ("language b64 decoder", 64, 8, 2048, 256, 32, 96),
    ("vision b32 self-attention", 32, 8, 512, 512, 128, 128),
    ("vision-learned b32 cross-attention", 32, 1, 512, 50176, 1024, 1024),
]

emit(case="torch-micro-env", torch=torch.__version__, gpu=torch.cuda.get_device_name(0))
for dtype, name in [(torch.bfloat16, "bf16"), (torch.float32, "fp32")]:
    for what, m, k, n in LINEAR:
        if time.time() - T0 > BUDGET:
            emit(case="torch-micro", op="linear", what=what, precision=name, skipped="budget")
            continue
        try:
            x = torch.randn(m, k, device=dev, dtype=dtype)
            w = torch.randn(n, k, device=dev, dtype=dtype)
            b = torch.randn(n, device=dev, dtype=dtype)
            ms = timeit(lambda: F.linear(x, w, b))
            emit(case="torch-micro", op="linear", what=what, precision=name, shape=[m, k, n], ms=round(ms, 4), tflops=round(2 * m * k * n / ms / 1e9, 1))
            del x, w, b
        except Exception as e:  # an out-of-memory or unsupported shape is a line, not the end
            emit(case="torch-micro", op="linear", what=what, precision=name, error=str(e)[:200])
    for what, batch, heads, nq, nk, dqk, dv in ATTENTION:
        if time.time() - T0 > BUDGET:
            emit(case="torch-micro", op="sdpa", what=what, precision=name, skipped="budget")
            continue
        try:
            q = torch.randn(batch, heads, nq, dqk, device=dev, dtype=dtype)
            k = torch.randn(batch, heads, nk, dqk, device=dev, dtype=dtype)
            v = torch.randn(batch, heads, nk, dv, device=dev, dtype=dtype)
            ms = timeit(lambda: F.scaled_dot_product_attention(q, k, v))
            flops = 2 * batch * heads * nq * nk * (dqk + dv)
            emit(case="torch-micro", op="sdpa", what=what, precision=name, shape=[batch, heads, nq, nk, dqk, dv], ms=round(ms, 4), tflops=round(flops / ms / 1e9, 1))
            del q, k, v
        except Exception as e:
            emit(case="torch-micro", op="sdpa", what=what, precision=name, error=str(e)[:200])
        torch.cuda.empty_cache()
