#!/usr/bin/env bash
# The one GPU check, for a session holding the GPU machine (see ../shared/device/README.md).
#
# Here, first:  bash bench/gpu-check.sh --prepare
#   packs what the GPU machine lacks into .device/ (ignored by git): Node, Node's headers,
#   node-addon-api's headers, the compiled TypeScript (dist), the anchors, and the addon built
#   here (CUDA sm_80/sm_90; cuBLAS and cuBLASLt are loaded at run time, so it runs there as is)
#   with a stamp of the native sources it was built from.
# Then, here:   bash bench/gpu-check.sh --dry-run
#   rehearses without a GPU: every step's command exists, the carried files are present and
#   current, the Node and Python scripts parse and accept the script's arguments, the ratio table
#   renders, and the tree + .device fit the 64 MiB that travel.
# There:        bash bench/gpu-check.sh      (device `run` with carry [".device"]; under 8 minutes)
#   loads the carried addon (or builds with plain cmake when the sources changed since), checks our
#   cuBLAS / cuBLASLt declarations against the real headers, then in this order, each part in its
#   own process under its own limit and all under one deadline (GPU_CHECK_BUDGET seconds, default
#   450): the runtime counters, kernel checks against the CPU references, parity of every fixture
#   in four precisions (and CUDA bf16 against the CPU bf16 oracle), PyTorch micro-benchmarks of our
#   product and attention shapes, transformers eager (hf_baseline.py), our speed (device-resident
#   and with host copies), the small cases again through CUDA graphs, the ratio table, an
#   event-based per-op profile (no per-op waits), the device-tensor and typed-error checks.
# Results land in $OUT (or ./gpu-check-out): gpu-check.log, hf.jsonl, ours.jsonl, torch-micro.jsonl,
# ours-graphs.jsonl, profile.txt, ratios.md.
set -uo pipefail
cd "$(dirname "$0")/.."

# The native sources' fingerprint: a carried addon is used only when it matches.
native_stamp() { find native CMakeLists.txt binding.gyp -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16; }
CARRIED=(.device/node.xz .device/node-headers.tar.xz .device/node-addon-api/napi.h .device/dist/bench/gpu-check.js
  .device/dist/bench/gpu.js .device/dist/bench/gpu-ratios.js .device/anchors/hf_baseline.py .device/anchors/hf_baseline_extra.py)
# The parts of dist/bench/gpu-check.js this script runs (the dry run checks them against --list).
FIXTURES="text-mlm text-classification image-learned image-fourier image-conv optical-flow multimodal-autoencoding multimodal-autoencoding-chunk"
PROFILED="language-mlm:bf16:64,language-mlm:bf16:1,vision-learned:bf16:32,optical-flow:bf16:1"

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .device
  [ -f .device/node.xz ] || xz -T0 -6 -c "$(command -v node)" > .device/node.xz
  tar -cJf .device/node-headers.tar.xz -C "$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")" include/node
  rm -rf .device/node-addon-api && cp -r node_modules/node-addon-api .device/node-addon-api
  npx tsc -p tsconfig.build.json && rm -rf .device/dist && cp -r dist .device/dist
  # The project's shared folder sits beside the checkout (../shared), or beside a worktree's parent.
  shared=../shared; [ -d "$shared/anchors" ] || shared=../../shared
  rm -rf .device/anchors && cp -r "$shared/anchors" .device/anchors
  if [ -f build/Release/perceiver_io.node ]; then
    cp build/Release/perceiver_io.node .device/perceiver_io.node && native_stamp > .device/perceiver_io.stamp
  fi
  du -sh .device
  echo "working tree + .device (must stay under 64 MiB):"
  { git ls-files -z | xargs -0 du -cb | tail -1; du -sb .device; } | awk '{ s += $1 } END { printf "%.1f MiB\n", s / 1048576 }'
  exit 0
fi

if [ "${1:-}" = "--dry-run" ]; then
  problems=0
  bad() { echo "DRY-RUN FAIL: $*"; problems=$((problems + 1)); }
  ok() { echo "ok   $*"; }
  bash -n "$0" && ok "this script parses" || bad "this script does not parse"
  for f in "${CARRIED[@]}"; do [ -e "$f" ] && ok "carried: $f" || bad "missing $f (run --prepare)"; done
  if [ -f .device/perceiver_io.node ] && [ "$(cat .device/perceiver_io.stamp 2>/dev/null)" = "$(native_stamp)" ]; then
    ok "carried addon matches the native sources: no build there"
  else
    echo "note the carried addon is missing or older than native/: the GPU run builds with cmake (about 2 minutes more)"
  fi
  # Commands each step runs (here what exists here; cmake, nvidia-smi and python3's torch are there).
  for c in xz tar timeout g++ sha256sum python3 node; do command -v "$c" > /dev/null && ok "command $c" || bad "no $c"; done
  ls /usr/local/cuda*/bin/nvcc > /dev/null 2>&1 && ok "nvcc (the ABI check's and the fallback build's CUDA)" || bad "no nvcc"
  for c in cmake nvidia-smi; do command -v "$c" > /dev/null && ok "command $c" || echo "note $c is not here (the GPU machine has it)"; done
  # The ABI check compiles here too (without cublasLt.h it checks nothing but must compile).
  cuda_inc=$(node native/scripts/build-config.cjs cuda-include)
  g++ -std=c++17 -fsyntax-only -I native/src -I "$cuda_inc" native/src/backend/cuda/cublaslt_abi_check.cc && ok "cublaslt_abi_check.cc compiles" || bad "cublaslt_abi_check.cc"
  # Scripts parse and accept this script's arguments.
  python3 -m py_compile bench/gpu_torch_micro.py .device/anchors/hf_baseline.py .device/anchors/hf_baseline_extra.py 2>&1 && ok "python scripts parse" || bad "a python script does not parse"
  rm -rf bench/__pycache__ .device/anchors/__pycache__
  for js in gpu-check gpu gpu-ratios; do node --check ".device/dist/bench/$js.js" && ok "$js.js parses" || bad "$js.js"; done
  parts=$(node .device/dist/bench/gpu-check.js --list) || bad "gpu-check.js --list"
  for p in runtime kernels attention $FIXTURES device-tensor errors; do [[ " $parts " == *" $p "* ]] || bad "gpu-check.js has no part $p"; done
  ok "gpu-check.js parts: $parts"
  # The runtime part runs on the CPU backend here (its counters, cuBLASLt's switch, the fault hook).
  PERCEIVER_IO_PREBUILD="$PWD/.device/perceiver_io.node" timeout 120 node .device/dist/bench/gpu-check.js --device cpu --part runtime > "${TMPDIR:-/tmp}/gpu-check-runtime.txt" 2>&1 &&
    ok "gpu-check.js --part runtime on the cpu: $(grep -c '^ok' "${TMPDIR:-/tmp}/gpu-check-runtime.txt") checks pass" ||
    { cat "${TMPDIR:-/tmp}/gpu-check-runtime.txt"; bad "gpu-check.js --part runtime on the cpu"; }
  node .device/dist/bench/gpu.js --dry-run --only "$PROFILED" > /dev/null && ok "gpu.js knows the profiled cases" || bad "gpu.js --only $PROFILED"
  node .device/dist/bench/gpu.js --dry-run --only vision-learned:bf16:32,language-mlm:bf16:64 > /dev/null || bad "gpu.js --only (extra)"
  node .device/dist/bench/gpu.js --dry-run --only language-mlm:bf16:1,vision-learned:bf16:1 > /dev/null || bad "gpu.js --only (graphs)"
  # The ratio table renders from the stored anchors and a made-up line of ours.
  tmp=$(mktemp -d)
  echo '{"case":"language-mlm","precision":"bf16","batch":64,"ms":20,"items_per_s":3200,"host_ms":25,"host_items_per_s":2560}' > "$tmp/ours.jsonl"
  echo '{"case":"torch-micro","op":"linear","what":"x","precision":"bf16","shape":[1,2,3],"ms":1,"tflops":2}' > "$tmp/micro.jsonl"
  node .device/dist/bench/gpu-ratios.js .device/anchors/hf-h200-2026-11-27.jsonl "$tmp/ours.jsonl" "$tmp/micro.jsonl" > "$tmp/ratios.md" &&
    grep -q '| language-mlm b64 bf16 vs transformers bf16+compile | 3200/s |' "$tmp/ratios.md" && ok "ratio table renders" || bad "gpu-ratios.js"
  rm -rf "$tmp"
  for f in $FIXTURES; do [ -f "test/fixtures/$f/io.safetensors" ] || bad "fixture $f missing"; done
  size=$({ git ls-files -z | xargs -0 du -cb | tail -1; du -sb .device; } | awk '{ s += $1 } END { print int(s / 1048576) }')
  [ "$size" -lt 64 ] && ok "tree + .device: $size MiB (< 64)" || bad "tree + .device: $size MiB (>= 64)"
  echo "dry run: $problems problem(s)"
  exit $((problems > 0))
fi

OUT_DIR="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu-check.log") 2>&1
step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
BUDGET=${GPU_CHECK_BUDGET:-450}
fails=0
# A step's limit cut to what is left of the budget; 0 (skip the step) when under 15 s are left.
# Every timed step goes through it, so the script ends within the budget plus a few seconds.
capped() {
  local limit=$1 left=$((BUDGET - SECONDS))
  if [ "$left" -lt 15 ]; then echo 0; elif [ "$limit" -gt "$left" ]; then echo "$left"; else echo "$limit"; fi
}
# A part under its own limit, cut to what is left of the budget.
part() {
  local limit; limit=$(capped "$1"); shift
  if [ "$limit" -eq 0 ]; then echo "SKIP (budget): $*"; return; fi
  timeout -k 5 "$limit" "$@" || { echo "FAIL (exit $?): $*"; fails=$((fails + 1)); return 1; }
}
# GPU_CHECK_STAGES picks stages (default: all but "extra"); "extra" re-runs the torch.compile
# anchors (hf_baseline_extra.py) beside our same cases, for the final acceptance run only.
STAGES=" ${GPU_CHECK_STAGES:-abi runtime kernels attention parity micro hf ours graphs ratios profile device-tensor errors} "
want() { [[ "$STAGES" == *" $1 "* ]]; }

step "toolchain"
mkdir -p /tmp/nb && xz -dc .device/node.xz > /tmp/nb/node && chmod +x /tmp/nb/node
export PATH=/tmp/nb:/usr/local/cuda/bin:$PATH
node --version; nvcc --version | tail -1; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
rm -rf dist && cp -r .device/dist dist

if [ -f .device/perceiver_io.node ] && [ "$(cat .device/perceiver_io.stamp 2>/dev/null)" = "$(native_stamp)" ]; then
  step "addon: the carried build (sources unchanged since --prepare)"
  export PERCEIVER_IO_PREBUILD="$PWD/.device/perceiver_io.node"
else
  step "build (plain cmake, CUDA sm_90 for this card)"
  mkdir -p /tmp/nodeh && tar -xJf .device/node-headers.tar.xz -C /tmp/nodeh
  export PERCEIVER_CUDA_ARCHS=90
  rm -rf build && mkdir -p build
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_JS_INC=/tmp/nodeh/include/node \
    -DNODE_ADDON_API_DIR="$PWD/.device/node-addon-api" > "$OUT_DIR/build.log" 2>&1 &&
    cmake --build build -j 16 >> "$OUT_DIR/build.log" 2>&1 || { tail -40 "$OUT_DIR/build.log"; exit 1; }
  export PERCEIVER_IO_PREBUILD="$PWD/build/Release/perceiver_io.node"
  [ -f "$PERCEIVER_IO_PREBUILD" ] || export PERCEIVER_IO_PREBUILD="$(find "$PWD/build" -name perceiver_io.node | head -1)"
fi
node -e "import('./dist/lib/index.js').then((m) => console.log(JSON.stringify(m.capabilities().cuda)))"

if want abi; then
step "our cuBLAS / cuBLASLt declarations against the installed headers (static_asserts)"
cuda_inc=/usr/local/cuda/targets/x86_64-linux/include
if [ -f "$cuda_inc/cublasLt.h" ]; then
  g++ -std=c++17 -fsyntax-only -I native/src -I "$cuda_inc" native/src/backend/cuda/cublaslt_abi_check.cc && echo "ok   declarations match $cuda_inc" ||
    { echo "FAIL: declarations differ from the headers (above)"; fails=$((fails + 1)); }
else
  echo "FAIL: no cublasLt.h in $cuda_inc"; fails=$((fails + 1))
fi
fi

if want runtime; then
step "runtime: no allocation / one wait / no pageable copy per warm forward; cuBLASLt vs cuBLAS; device fault"
part 90 node dist/bench/gpu-check.js --device cuda:0 --part runtime
fi

if want kernels; then
step "kernel checks against the CPU reference"
# 100 s for the first list, 60-90 s more for bench/gpu-kernel-cases.ts (its CPU references of the
# 50k and 182k key ranges dominate).
part 190 node dist/bench/gpu-check.js --device cuda:0 --part kernels
fi

if want attention; then
step "GEMM attention (float32's default; half precision runs the flash kernel, checked with the kernels) against the CPU reference"
if ! part 100 node dist/bench/gpu-check.js --device cuda:0 --part attention; then
  # Everything after still runs, on the fused kernel, so one faulty path cannot void the run.
  echo "the rest of this check uses PERCEIVER_CUDA_ATTENTION=fused"
  export PERCEIVER_CUDA_ATTENTION=fused
fi
fi

if want parity; then
step "parity of every fixture on cuda, every precision; cuda bf16 vs the cpu bf16 oracle"
for fixture in $FIXTURES; do part 60 node dist/bench/gpu-check.js --device cuda:0 --part "$fixture"; done
fi

if want micro; then
step "PyTorch on our product and attention shapes (calibration)"
limit=$(capped "${MICRO_LIMIT:-75}")
[ "$limit" -eq 0 ] && echo "SKIP (budget): gpu_torch_micro.py" ||
(PYTHONUNBUFFERED=1 timeout -k 5 "$limit" python3 bench/gpu_torch_micro.py "${MICRO_BUDGET:-55}" > "$OUT_DIR/torch-micro.jsonl" 2> "$OUT_DIR/torch-micro.err") ||
  echo "gpu_torch_micro.py stopped (exit $?); see torch-micro.err"
tail -3 "$OUT_DIR/torch-micro.err" 2> /dev/null
fi

# One after the other, never side by side, so neither timing disturbs the other.
if want hf; then
step "transformers eager on the same card (hf_baseline.py)"
limit=$(capped "${HF_LIMIT:-130}")
[ "$limit" -eq 0 ] && echo "SKIP (budget): hf_baseline.py" ||
(cd .device/anchors && PYTHONUNBUFFERED=1 timeout -k 5 "$limit" python3 hf_baseline.py "${HF_BUDGET:-90}" > "$OUT_DIR/hf.jsonl" 2> "$OUT_DIR/hf.err") ||
  echo "hf_baseline.py stopped (exit $?); see hf.err"
tail -3 "$OUT_DIR/hf.err" 2> /dev/null
fi

if want ours; then
step "perceiver-io speed cases (device-resident, and with host copies)"
part "${OURS_LIMIT:-150}" node dist/bench/gpu.js --device cuda:0 --budget "${OURS_BUDGET:-110}" | tee "$OUT_DIR/ours.jsonl"
fi

if want graphs; then
step "small batches through CUDA graphs (PERCEIVER_CUDA_GRAPHS=1), beside the eager lines above"
PERCEIVER_CUDA_GRAPHS=1 part 60 node dist/bench/gpu.js --device cuda:0 --only language-mlm:bf16:1,vision-learned:bf16:1 | tee "$OUT_DIR/ours-graphs.jsonl"
fi

if want extra; then
step "transformers: torch.compile anchors (hf_baseline_extra.py) and the same cases of ours"
limit=$(capped "${HF_EXTRA_LIMIT:-240}")
[ "$limit" -eq 0 ] && echo "SKIP (budget): hf_baseline_extra.py" ||
(cd .device/anchors && PYTHONUNBUFFERED=1 timeout -k 5 "$limit" python3 hf_baseline_extra.py > "$OUT_DIR/hf-extra.jsonl" 2>> "$OUT_DIR/hf.err") ||
  echo "hf_baseline_extra.py stopped (exit $?); see hf.err"
cat "$OUT_DIR/hf-extra.jsonl"
part 120 node dist/bench/gpu.js --device cuda:0 --only vision-learned:bf16:32,language-mlm:bf16:64 | tee -a "$OUT_DIR/ours.jsonl"
fi

if want ratios; then
step "ratios (same run, same card)"
touch "$OUT_DIR/hf.jsonl" "$OUT_DIR/hf-extra.jsonl" "$OUT_DIR/ours.jsonl" "$OUT_DIR/torch-micro.jsonl"
# The stored compile anchors stand in when this run did not re-measure them (the table says so).
hf_files="$OUT_DIR/hf.jsonl,$OUT_DIR/hf-extra.jsonl"
[ -s "$OUT_DIR/hf-extra.jsonl" ] || { hf_files="$hf_files,.device/anchors/hf-h200-2026-11-27.jsonl"; echo "(torch.compile anchors: the stored 2026-11-27 figures)"; }
node dist/bench/gpu-ratios.js "$hf_files" "$OUT_DIR/ours.jsonl" "$OUT_DIR/torch-micro.jsonl" | tee "$OUT_DIR/ratios.md"
fi

if want profile; then
step "per-op profile from CUDA events (no per-op waits) of the large cases"
PERCEIVER_PROFILE=events part 75 node dist/bench/gpu.js --device cuda:0 --iterations 2 --only "$PROFILED" > /dev/null 2> "$OUT_DIR/profile.txt"
head -c 20000 "$OUT_DIR/profile.txt"
fi

if want device-tensor; then
step "device-resident tensors on cuda (outputs, uploads, memory back after 100 cycles)"
part 60 node dist/bench/gpu-check.js --device cuda:0 --part device-tensor
fi

if want errors; then
step "typed errors: bad device index, out of memory"
part 60 node dist/bench/gpu-check.js --device cuda:0 --part errors
fi

step "done: $fails part(s) failed"
