#!/usr/bin/env bash
# The one GPU check, for a session holding the GPU machine (see ../shared/device/README.md):
# build there, run every parity test and kernel check on the GPU in each precision, then the
# speed cases beside transformers' own (hf_baseline.py) on the same card, and print the ratios.
#
# Here, first:   bash bench/gpu-check.sh --prepare     (packs Node, node_modules and the anchors into .device/)
# There:         bash bench/gpu-check.sh               (run with .device carried; about 6-7 minutes)
# Results land in $OUT (or ./gpu-check-out): gpu-check.log, hf.jsonl, ours.jsonl, ratios.md.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .device
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  [ -f .device/node.xz ] || bash ../shared/device/pack-node.sh
  # Only what the check loads: the build tools, tap and its TypeScript plugin, node-addon-api.
  tar -cJf .device/node_modules.tar.xz --exclude=node_modules/@img --exclude=node_modules/sharp node_modules
  cp -r ../shared/anchors .device/anchors
  # The GPU machine has no static OpenBLAS: carry this machine's (the CPU backend links it).
  mkdir -p .device/openblas/include .device/openblas/lib
  cp "$(node native/scripts/build-config.cjs openblas-include)"/*.h .device/openblas/include/
  xz -c "$(readlink -f "$(node native/scripts/build-config.cjs openblas-lib)")" > .device/openblas/lib/libopenblas.a.xz
  du -sh .device
  exit 0
fi

OUT_DIR="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu-check.log") 2>&1
step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }

step "toolchain"
mkdir -p /tmp/nb && xz -dc .device/node.xz > /tmp/nb/node && chmod +x /tmp/nb/node
export PATH=/tmp/nb:/usr/local/cuda/bin:$PATH
[ -d node_modules ] || tar -xJf .device/node_modules.tar.xz
node --version; nvcc --version | tail -1; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

step "build (cmake-js: CUDA sm_90 for this card)"
[ -f .device/openblas/lib/libopenblas.a ] || xz -dk .device/openblas/lib/libopenblas.a.xz
export PERCEIVER_CUDA_ARCHS=90 PERCEIVER_OPENBLAS_DIR="$PWD/.device/openblas"
rm -rf build
npx cmake-js compile --parallel 16 > "$OUT_DIR/build.log" 2>&1 || { tail -30 "$OUT_DIR/build.log"; exit 1; }
npx tsc -p tsconfig.build.json
node -e "import('./dist/lib/index.js').then((m) => console.log(JSON.stringify(m.capabilities().cuda)))"

step "hf_baseline.py in the background (transformers on the same card)"
(cd .device/anchors && PYTHONUNBUFFERED=1 python3 hf_baseline.py 200 > "$OUT_DIR/hf.jsonl" 2> "$OUT_DIR/hf.err") &
HF_PID=$!

step "kernel checks and parity on cuda, every precision"
for dtype in float32 tfloat32 float16 bfloat16; do
  PERCEIVER_TEST_DEVICE=cuda PERCEIVER_TEST_DTYPE=$dtype npx tap --disable-coverage --reporter=terse \
    test/cuda.test.ts test/parity-text.test.ts test/parity-heads.test.ts 2>&1 | tail -4 | sed "s/^/[$dtype] /"
done

wait $HF_PID
step "perceiver-io speed cases"
node dist/bench/gpu.js --device cuda:0 --budget 150 | tee "$OUT_DIR/ours.jsonl"

step "ratios (same run, same card)"
node dist/bench/gpu-ratios.js "$OUT_DIR/hf.jsonl" "$OUT_DIR/ours.jsonl" | tee "$OUT_DIR/ratios.md"
