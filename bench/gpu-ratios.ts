/**
 * Joins perceiver-io's GPU lines (bench/gpu.ts) with transformers' (hf_baseline.py) measured in the
 * same run on the same card, and prints one table of ratios against the speed goals. Ours is timed
 * with device-resident inputs and outputs (as transformers is); with host copies beside it. A third
 * file (bench/gpu_torch_micro.py's lines) adds what PyTorch reaches on the same product and
 * attention shapes, for calibration against the per-op profile.
 *   node dist/bench/gpu-ratios.js hf.jsonl[,hf-extra.jsonl] ours.jsonl [torch-micro.jsonl]
 */
import { readFileSync } from 'node:fs';

type Line = Record<string, unknown>;
const read = (file: string): Line[] =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim().startsWith('{'))
    .map((l) => JSON.parse(l) as Line);

const [hfFile, oursFile, microFile] = process.argv.slice(2);
if (!hfFile || !oursFile) {
  process.stderr.write('usage: node dist/bench/gpu-ratios.js hf.jsonl[,hf-extra.jsonl] ours.jsonl [torch-micro.jsonl]\n');
  process.exit(2);
}
// Several transformers files may be given, comma-separated (hf_baseline.py and hf_baseline_extra.py).
const hf = hfFile.split(',').flatMap((file) => (file ? read(file) : []));
const ours = read(oursFile);
const find = (lines: Line[], c: string, p: string, b: number) => lines.find((l) => l.case === c && l.precision === p && l.batch === b);

interface Goal {
  what: string;
  ours: [string, string, number];
  anchor: [string, string, number];
  metric: 'items_per_s' | 'ms';
  target: string;
  pass: (ratio: number, oursValue: number) => boolean;
}

const GOALS: Goal[] = [
  { what: 'language-mlm b64 bf16 vs transformers bf16+compile', ours: ['language-mlm', 'bf16', 64], anchor: ['language-mlm', 'bf16+torch.compile', 64], metric: 'items_per_s', target: '>= 1.5x', pass: (r) => r >= 1.5 },
  { what: 'vision-learned b32 bf16 vs transformers bf16+compile', ours: ['vision-learned', 'bf16', 32], anchor: ['vision-learned', 'bf16+torch.compile', 32], metric: 'items_per_s', target: '>= 1.5x', pass: (r) => r >= 1.5 },
  { what: 'vision-fourier b32 bf16 vs transformers bf16', ours: ['vision-fourier', 'bf16', 32], anchor: ['vision-fourier', 'bf16', 32], metric: 'items_per_s', target: '>= 10x', pass: (r) => r >= 10 },
  { what: 'language-mlm b1 bf16 latency', ours: ['language-mlm', 'bf16', 1], anchor: ['language-mlm', 'bf16', 1], metric: 'ms', target: '<= 2 ms', pass: (_, v) => v <= 2 },
  { what: 'optical flow 368x496 bf16 latency', ours: ['optical-flow', 'bf16', 1], anchor: ['optical-flow', 'bf16', 1], metric: 'ms', target: '<= 10 ms', pass: (_, v) => v <= 10 },
  { what: 'language-mlm b64 float32 vs transformers fp32', ours: ['language-mlm', 'fp32', 64], anchor: ['language-mlm', 'fp32', 64], metric: 'items_per_s', target: '>= 1x', pass: (r) => r >= 1 },
  { what: 'vision-learned b32 float32 vs transformers fp32', ours: ['vision-learned', 'fp32', 32], anchor: ['vision-learned', 'fp32', 32], metric: 'items_per_s', target: '>= 1x', pass: (r) => r >= 1 },
];

const env = hf.find((l) => l.case === 'env');
console.log(`card: ${String(env?.gpu ?? 'unknown')}; transformers ${String(env?.transformers ?? '?')}, torch ${String(env?.torch ?? '?')}`);
console.log('| goal | perceiver-io | transformers | ratio | target | met | perceiver-io with host copies |');
console.log('| --- | ---: | ---: | ---: | --- | --- | ---: |');
for (const g of GOALS) {
  const o = find(ours, ...g.ours);
  const a = find(hf, ...g.anchor);
  const ov = o?.[g.metric] as number | undefined;
  const av = a?.[g.metric] as number | undefined;
  if (ov === undefined || av === undefined) {
    console.log(`| ${g.what} | ${String(o?.error ?? ov ?? 'missing')} | ${String(a?.error ?? av ?? 'missing')} | - | ${g.target} | no data | - |`);
    continue;
  }
  const ratio = g.metric === 'ms' ? av / ov : ov / av;
  const unit = g.metric === 'ms' ? ' ms' : '/s';
  const host = o?.[g.metric === 'ms' ? 'host_ms' : 'host_items_per_s'];
  console.log(`| ${g.what} | ${ov}${unit} | ${av}${unit} | ${ratio.toFixed(2)}x | ${g.target} | ${g.pass(ratio, ov) ? 'yes' : 'no'} | ${host === undefined ? '-' : `${String(host)}${unit}`} |`);
}
const flow = find(ours, 'optical-flow', 'bf16', 1);
if (flow) console.log(`optical flow bf16 device memory beyond the weights: ${String(flow.extra_gib)} GiB (goal < 1 GiB)`);
const big = ours.find((l) => l.case === 'optical-flow-1080p');
if (big) console.log(`1920x1080 flow pair: ${big.error ? `failed: ${String(big.error)}` : `decoded in ${String(big.decode_ms)} ms`}`);

if (microFile) {
  const micro = read(microFile).filter((l) => l.case === 'torch-micro');
  console.log('\nPyTorch on the same card and shapes (calibration for the per-op profile):');
  console.log('| op | shape | precision | ms | TFLOP/s |');
  console.log('| --- | --- | --- | ---: | ---: |');
  for (const l of micro) {
    const shape = Array.isArray(l.shape) ? `${String(l.what)} [${(l.shape as number[]).join(', ')}]` : String(l.what);
    console.log(`| ${String(l.op)} | ${shape} | ${String(l.precision)} | ${String(l.ms ?? l.error ?? l.skipped)} | ${String(l.tflops ?? '-')} |`);
  }
}
