#!/usr/bin/env bash
# The one GPU check, for a session holding the GPU machine (see ../shared/device/README.md).
#
# Here, first:  bash bench/gpu-check.sh --prepare
#   packs what the GPU machine lacks into .device/ (ignored by git): Node, Node's headers,
#   node-addon-api's headers, the compiled TypeScript (dist), the anchors.
# There:        bash bench/gpu-check.sh      (device `run` with carry [".device"]; about 6-7 minutes)
#   builds the addon with plain cmake (no node_modules, no network there), runs the kernel checks
#   and every fixture's parity in each precision (dist/bench/gpu-check.js), then transformers'
#   hf_baseline.py and perceiver-io's speed cases one after the other on the same card, and prints
#   the ratio table.
# Results land in $OUT (or ./gpu-check-out): gpu-check.log, hf.jsonl, ours.jsonl, ratios.md.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .device
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  [ -f .device/node.xz ] || bash ../shared/device/pack-node.sh
  tar -cJf .device/node-headers.tar.xz -C "$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")" include/node
  rm -rf .device/node-addon-api && cp -r node_modules/node-addon-api .device/node-addon-api
  npx tsc -p tsconfig.build.json && rm -rf .device/dist && cp -r dist .device/dist
  rm -rf .device/anchors && cp -r ../shared/anchors .device/anchors
  du -sh .device
  echo "working tree + .device (must stay under 64 MiB):"
  { git ls-files -z | xargs -0 du -cb | tail -1; du -sb .device; } | awk '{ s += $1 } END { printf "%.1f MiB\n", s / 1048576 }'
  exit 0
fi

OUT_DIR="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu-check.log") 2>&1
step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }

step "toolchain"
mkdir -p /tmp/nb && xz -dc .device/node.xz > /tmp/nb/node && chmod +x /tmp/nb/node
export PATH=/tmp/nb:/usr/local/cuda/bin:$PATH
mkdir -p /tmp/nodeh && tar -xJf .device/node-headers.tar.xz -C /tmp/nodeh
node --version; nvcc --version | tail -1; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

step "build (plain cmake, CUDA sm_90 for this card)"
export PERCEIVER_CUDA_ARCHS=90
rm -rf build && mkdir -p build
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_JS_INC=/tmp/nodeh/include/node \
  -DNODE_ADDON_API_DIR="$PWD/.device/node-addon-api" > "$OUT_DIR/build.log" 2>&1 &&
  cmake --build build -j 16 >> "$OUT_DIR/build.log" 2>&1 || { tail -40 "$OUT_DIR/build.log"; exit 1; }
rm -rf dist && cp -r .device/dist dist
export PERCEIVER_IO_PREBUILD="$PWD/build/Release/perceiver_io.node"
[ -f "$PERCEIVER_IO_PREBUILD" ] || export PERCEIVER_IO_PREBUILD="$(find "$PWD/build" -name perceiver_io.node | head -1)"
node -e "import('./dist/lib/index.js').then((m) => console.log(JSON.stringify(m.capabilities().cuda)))"

# Each part in its own process and under its own time limit: a GPU fault (a sticky CUDA error
# poisons its process) or a hang in one part cannot hide the others' results.
fails=0
# GPU_CHECK_STAGES picks stages (default: all but "extra"); "extra" runs the second anchor script
# (transformers bf16 + torch.compile for vision-learned, bf16 at batch 256) beside our same cases.
STAGES=" ${GPU_CHECK_STAGES:-kernels attention parity errors hf ours ratios profile} "
want() { [[ "$STAGES" == *" $1 "* ]]; }
part() { local limit=$1; shift; timeout -k 5 "$limit" "$@" || { echo "FAIL (exit $?): $*"; fails=$((fails + 1)); }; }

if want kernels; then
step "kernel checks against the CPU reference"
part 120 node dist/bench/gpu-check.js --device cuda:0 --part kernels
fi

if want attention; then
step "GEMM attention (the default) against the CPU reference"
if ! timeout -k 5 120 node dist/bench/gpu-check.js --device cuda:0 --part attention; then
  # Everything after still runs, on the fused kernel, so one faulty path cannot void the run.
  echo "FAIL: GEMM attention; the rest of this check uses PERCEIVER_CUDA_ATTENTION=fused"
  fails=$((fails + 1))
  export PERCEIVER_CUDA_ATTENTION=fused
fi
fi

if want parity; then
step "parity of every fixture on cuda, every precision"
for fixture in text-mlm text-classification image-learned image-fourier image-conv optical-flow multimodal-autoencoding multimodal-autoencoding-chunk; do
  part 90 node dist/bench/gpu-check.js --device cuda:0 --part "$fixture"
done
step "device-resident tensors on cuda (outputs, uploads, memory back after 100 cycles)"
part 90 node dist/bench/gpu-check.js --device cuda:0 --part device-tensor
fi

if want errors; then
step "typed errors: bad device index, out of memory"
part 90 node dist/bench/gpu-check.js --device cuda:0 --part errors
fi

# One after the other, never side by side, so neither timing disturbs the other.
if want hf; then
step "transformers on the same card (hf_baseline.py)"
(cd .device/anchors && PYTHONUNBUFFERED=1 timeout -k 5 "${HF_LIMIT:-150}" python3 hf_baseline.py "${HF_BUDGET:-100}" > "$OUT_DIR/hf.jsonl" 2> "$OUT_DIR/hf.err") ||
  echo "hf_baseline.py stopped (exit $?); see hf.err"
tail -3 "$OUT_DIR/hf.err"
fi

if want ours; then
step "perceiver-io speed cases"
timeout -k 5 "${OURS_LIMIT:-200}" node dist/bench/gpu.js --device cuda:0 --budget "${OURS_BUDGET:-150}" | tee "$OUT_DIR/ours.jsonl"
fi

if want extra; then
step "transformers: torch.compile anchors (hf_baseline_extra.py) and the same cases of ours"
(cd .device/anchors && PYTHONUNBUFFERED=1 timeout -k 5 "${HF_EXTRA_LIMIT:-240}" python3 hf_baseline_extra.py > "$OUT_DIR/hf-extra.jsonl" 2>> "$OUT_DIR/hf.err") ||
  echo "hf_baseline_extra.py stopped (exit $?); see hf.err"
cat "$OUT_DIR/hf-extra.jsonl"
timeout -k 5 120 node dist/bench/gpu.js --device cuda:0 --only vision-learned:bf16:32,language-mlm:bf16:64 | tee -a "$OUT_DIR/ours.jsonl"
fi

step "ratios (same run, same card)"
touch "$OUT_DIR/hf.jsonl" "$OUT_DIR/hf-extra.jsonl" "$OUT_DIR/ours.jsonl"
node dist/bench/gpu-ratios.js "$OUT_DIR/hf.jsonl,$OUT_DIR/hf-extra.jsonl" "$OUT_DIR/ours.jsonl" | tee "$OUT_DIR/ratios.md"

if want profile; then
step "per-op profile of the large cases (one forward each, synchronised per op)"
PERCEIVER_PROFILE=1 timeout -k 5 90 node dist/bench/gpu.js --device cuda:0 --iterations 1 \
  --only language-mlm:bf16:64,language-mlm:bf16:1,vision-learned:bf16:32,optical-flow:bf16:1 > /dev/null 2> "$OUT_DIR/profile.txt"
cat "$OUT_DIR/profile.txt"
fi

step "done: $fails part(s) failed"
