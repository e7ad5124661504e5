/**
 * GPU throughput of perceiver-io at the published checkpoints' shapes (random weights), in the
 * line format of ../shared/anchors/hf_baseline.py so bench/gpu-ratios.ts can join the two runs:
 *   node dist/bench/gpu.js [--device cuda:0] > ours.jsonl
 * Each case validates its output (shape, finite) before timing; memory is the device memory in use
 * after the timed forwards minus after loading (the engine's pool keeps its peak), in GiB.
 * Two timings per case: `ms` / `items_per_s` with the input uploaded once and every output left in
 * device memory (what transformers' figures measure: tensors already on the card), and `host_ms` /
 * `host_items_per_s` with the host copies in and out (what a Node caller sees), beside it.
 *   node dist/bench/gpu.js --dry-run    lists the cases (bench/gpu-check.sh --dry-run)
 */
import { parseArgs } from 'node:util';
import {
  PerceiverConfig,
  PerceiverForImageClassificationFourier,
  PerceiverForImageClassificationLearned,
  PerceiverForMaskedLM,
  PerceiverForOpticalFlow,
  RandomWeightStore,
  Tensor,
  type ComputeDType,
  type PerceiverModel,
} from '../lib/index.js';
import { loadAddon } from '../lib/native/binding.js';
import { randomValues } from './common.js';

const { values } = parseArgs({
  options: {
    device: { type: 'string', default: 'cuda:0' },
    budget: { type: 'string', default: '240' },
    // Only these runs, as case:precision:batch (e.g. language-mlm:bf16:64); with --iterations 1
    // and PERCEIVER_PROFILE=1 this prints a per-op profile of each.
    only: { type: 'string' },
    iterations: { type: 'string' },
    'skip-1080p': { type: 'boolean', default: false },
    'dry-run': { type: 'boolean', default: false },
  },
});
const only = values.only ? new Set(values.only.split(',')) : undefined;
const fixedIterations = values.iterations ? Number(values.iterations) : undefined;
const device = values.device!;
const deviceIndex = Number(device.split(':')[1] ?? 0);
const budgetSeconds = Number(values.budget);
const started = performance.now();

function emit(record: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ ...record, t: Math.round((performance.now() - started) / 100) / 10 }) + '\n');
}


function ids(batch: number): Tensor {
  const data = new BigInt64Array(batch * 2048);
  for (let i = 0; i < data.length; i++) data[i] = BigInt(6 + ((i * 7919) % 256));
  return new Tensor('int64', [batch, 2048], data);
}

const usedGiB = () => {
  const m = loadAddon().cudaMemoryInfo(deviceIndex);
  return (m.total - m.free) / 2 ** 30;
};

const PRECISION: Record<ComputeDType, string> = { float32: 'fp32', tfloat32: 'tf32', float16: 'fp16', bfloat16: 'bf16' };

interface Case {
  name: string;
  build: () => PerceiverModel;
  input: (batch: number) => Tensor;
  shape: (batch: number) => number[];
  runs: [ComputeDType, number][];
}

const vision = (extra: Record<string, unknown>) =>
  new PerceiverConfig({ num_latents: 512, d_latents: 1024, num_blocks: 8, num_self_attends_per_block: 6, num_cross_attention_heads: 1, num_self_attention_heads: 8, num_labels: 1000, ...extra });

const CASES: Case[] = [
  {
    name: 'language-mlm',
    build: () => new PerceiverForMaskedLM(new PerceiverConfig({ qk_channels: 256, v_channels: 1280 })),
    input: ids,
    shape: (b) => [b, 2048, 262],
    runs: [['bfloat16', 1], ['bfloat16', 64], ['float32', 1], ['float32', 64], ['tfloat32', 64]],
  },
  {
    name: 'vision-learned',
    build: () => new PerceiverForImageClassificationLearned(vision({ image_size: 224, d_model: 512 })),
    input: (b) => new Tensor('float32', [b, 3, 224, 224], randomValues(b * 3 * 224 * 224, 3)),
    shape: (b) => [b, 1000],
    runs: [['bfloat16', 1], ['bfloat16', 32], ['float32', 32]],
  },
  {
    name: 'vision-fourier',
    build: () => new PerceiverForImageClassificationFourier(vision({ d_model: 261 })),
    input: (b) => new Tensor('float32', [b, 3, 224, 224], randomValues(b * 3 * 224 * 224, 5)),
    shape: (b) => [b, 1000],
    runs: [['bfloat16', 32], ['float32', 32]],
  },
  {
    name: 'optical-flow',
    build: () =>
      new PerceiverForOpticalFlow(new PerceiverConfig({ num_latents: 2048, d_latents: 512, d_model: 322, num_blocks: 1, num_self_attends_per_block: 24, num_self_attention_heads: 16, num_cross_attention_heads: 1 })),
    input: (b) => new Tensor('float32', [b, 2, 27, 368, 496], randomValues(b * 2 * 27 * 368 * 496, 7)),
    shape: (b) => [b, 368, 496, 2],
    runs: [['bfloat16', 1], ['float32', 1]],
  },
];

function check(out: Tensor | undefined, want: number[], what: string): void {
  if (!out || out.shape.join() !== want.join()) throw new Error(`${what}: logits shape [${out?.shape.join(', ')}], expected [${want.join(', ')}]`);
  for (let i = 0; i < out.size; i += Math.max(1, Math.floor(out.size / 4096))) {
    if (!Number.isFinite(out.get(i))) throw new Error(`${what}: non-finite logits`);
  }
}

if (values['dry-run']) {
  const names = CASES.flatMap((c) => c.runs.map(([dtype, batch]) => `${c.name}:${PRECISION[dtype]}:${batch}`));
  const unknown = only ? [...only].filter((n) => !names.includes(n)) : [];
  console.log(`cases: ${names.join(' ')}`);
  if (unknown.length) {
    console.error(`unknown --only case(s): ${unknown.join(' ')}`);
    process.exit(2);
  }
  process.exit(0);
}

const median = (times: number[]) => [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
const round3 = (v: number) => Math.round(v * 1000) / 1000;

emit({ case: 'env', engine: 'perceiver-io', device, cuda: JSON.stringify(loadAddon().capabilities().cuda.devices) });
for (const c of CASES) {
  for (const [dtype, batch] of c.runs) {
    if (only && !only.has(`${c.name}:${PRECISION[dtype]}:${batch}`)) continue;
    if ((performance.now() - started) / 1000 > budgetSeconds) {
      emit({ case: c.name, precision: PRECISION[dtype], batch, skipped: 'budget' });
      continue;
    }
    let model: PerceiverModel | undefined;
    try {
      model = await c.build().loadWeights(new RandomWeightStore(1), { device, dtype });
      const afterLoad = usedGiB();
      const inputs = c.input(batch);
      check((await model.forward({ inputs })).logits, c.shape(batch), `${c.name} ${dtype} batch ${batch}`);
      const iterations = fixedIterations ?? (batch >= 32 || c.name === 'optical-flow' ? 4 : 8);
      const hostTimes: number[] = [];
      for (let i = 0; i < iterations; i++) {
        const t0 = performance.now();
        await model.forward({ inputs });
        hostTimes.push(performance.now() - t0);
      }
      // Device-resident: the input uploaded once, every output left on the device (disposed).
      // Token ids cannot be a DeviceTensor (float inputs only): they go up with each call, 0.5 MB
      // at batch 64, through the backend's pinned staging.
      const uploaded = inputs.dtype === 'float32' ? await model.upload(inputs) : undefined;
      const residentTimes: number[] = [];
      for (let i = 0; i < iterations + 1; i++) {
        const t0 = performance.now();
        const out = await model.forward({ inputs: uploaded ?? inputs, outputs: 'device' });
        if (i > 0) residentTimes.push(performance.now() - t0); // the first is this call shape's warm-up
        (out.logits as unknown as { dispose(): void }).dispose();
        out.lastHiddenState.dispose();
      }
      uploaded?.dispose();
      const ms = median(residentTimes), hostMs = median(hostTimes);
      emit({
        case: c.name, precision: PRECISION[dtype], batch,
        ms: round3(ms), best_ms: round3(Math.min(...residentTimes)), items_per_s: Math.round((batch * 100000) / ms) / 100,
        host_ms: round3(hostMs), host_items_per_s: Math.round((batch * 100000) / hostMs) / 100,
        extra_gib: Math.round((usedGiB() - afterLoad) * 100) / 100,
      });
    } catch (error) {
      emit({ case: c.name, precision: PRECISION[dtype], batch, error: String((error as Error).message ?? error).slice(0, 300) });
    } finally {
      await model?.dispose();
    }
  }
}
// A 1920x1080 frame pair in one pass (transformers materialises 2 x 7.7 GiB of scores for it).
if (!only && !values['skip-1080p']) try {
  const model = await CASES[3]!.build().loadWeights(new RandomWeightStore(1), { device, dtype: 'bfloat16' });
  const inputs = new Tensor('float32', [1, 2, 27, 1080, 1920], randomValues(2 * 27 * 1080 * 1920, 9));
  const encoding = await model.encode({ inputs });
  const points = Int32Array.from({ length: 1080 * 1920 }, (_, i) => i);
  const t0 = performance.now();
  const out = await model.decode(encoding, { subsampledOutputPoints: points });
  emit({ case: 'optical-flow-1080p', precision: 'bf16', batch: 1, decode_ms: Math.round(performance.now() - t0), shape: (out.logits as Tensor).shape });
  encoding.dispose();
  await model.dispose();
} catch (error) {
  emit({ case: 'optical-flow-1080p', error: String((error as Error).message ?? error).slice(0, 300) });
}
