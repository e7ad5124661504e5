/**
 * vision-learned-cpu and optical-flow-cpu: PerceiverForImageClassificationLearned at 224x224 and
 * PerceiverForOpticalFlow on one 368x496 frame pair, at the published checkpoints' shapes (as
 * ../shared/anchors/hf_baseline.py builds them) with random weights, on the CPU backend.
 * Validate-then-time, with the machine's FMA peak measured in the same run, as language-cpu.
 */
import {
  PerceiverConfig,
  PerceiverForImageClassificationLearned,
  PerceiverForOpticalFlow,
  RandomWeightStore,
  Tensor,
  type PerceiverModel,
} from '../lib/index.js';
import { type BenchCase, type BenchOptions, type CaseReport, fmt, measureFmaPeak, median, peakRssMiB, randomValues, secondsSince } from './common.js';

interface HeadCaseSpec {
  name: string;
  description: string;
  /** Forward GFLOP per item, matrix products only (../shared/anchors/flops.py). */
  gflopPerItem: number;
  unit: string;
  build(): PerceiverModel;
  input(batch: number): Tensor;
  expectedShape(batch: number): number[];
}


function check(logits: Tensor | undefined, want: number[], name: string): void {
  if (!logits) throw new Error(`${name}: no logits`);
  if (logits.shape.length !== want.length || logits.shape.some((d, i) => d !== want[i])) {
    throw new Error(`${name}: logits shape [${logits.shape.join(', ')}], expected [${want.join(', ')}]`);
  }
  for (let i = 0; i < logits.size; i++) if (!Number.isFinite(logits.get(i))) throw new Error(`${name}: logits[${i}] is not finite`);
}

function headCase(spec: HeadCaseSpec): BenchCase {
  return {
    name: spec.name,
    description: spec.description,
    defaultBatches: [1],
    unavailable: () => undefined,
    async run(options: BenchOptions): Promise<CaseReport> {
      const { iterations, log } = options;
      const batches = options.batches ?? [1];
      log(`${spec.name}: FMA peak (before)`);
      const before = await measureFmaPeak(3);
      log(`${spec.name}: loading with random weights`);
      const loadStart = performance.now();
      const model = await spec.build().loadWeights(new RandomWeightStore(3));
      const loadSeconds = secondsSince(loadStart);
      const rows: string[][] = [];
      const metrics: Record<string, unknown>[] = [];
      try {
        for (const batch of batches) {
          const inputs = spec.input(batch);
          log(`${spec.name}: batch ${batch}: validation forward`);
          check((await model.forward({ inputs })).logits, spec.expectedShape(batch), spec.name);
          const seconds: number[] = [];
          for (let i = 0; i < iterations; i++) {
            const start = performance.now();
            const out = await model.forward({ inputs });
            seconds.push(secondsSince(start));
            check(out.logits, spec.expectedShape(batch), spec.name);
            log(`${spec.name}: batch ${batch}: forward ${i + 1}/${iterations} ${seconds[i]!.toFixed(3)} s`);
          }
          metrics.push({ batch, seconds });
          rows.push([String(batch), seconds.map((s) => s.toFixed(3)).join(' '), fmt(median(seconds), 3), fmt(batch / median(seconds), 3)]);
        }
      } finally {
        await model.dispose();
      }
      log(`${spec.name}: FMA peak (after)`);
      const after = await measureFmaPeak(3);
      const peak = Math.max(before.gflops, after.gflops);
      for (const [i, row] of rows.entries()) {
        const m = metrics[i]!;
        const gflops = (spec.gflopPerItem * (m.batch as number)) / median(m.seconds as number[]);
        m.gflops = gflops;
        m.fractionOfFmaPeak = gflops / peak;
        row.push(fmt(gflops, 1), `${fmt((100 * gflops) / peak, 1)} %`);
      }
      return {
        name: spec.name,
        description: spec.description,
        tables: [
          {
            title: `forward after 1 validation forward; ${spec.gflopPerItem} GFLOP per ${spec.unit}; FMA peak (${before.isa}, ${before.threads} threads) ${fmt(peak, 1)} GFLOP/s (before ${fmt(before.gflops, 1)}, after ${fmt(after.gflops, 1)})`,
            headers: ['batch', 'timed forwards (s)', 'median s', `${spec.unit}s/s`, 'GFLOP/s', '% of FMA peak'],
            rows,
          },
        ],
        notes: [`model load (random weights): ${fmt(loadSeconds, 2)} s`, `RSS peak: ${fmt(peakRssMiB(), 0)} MiB`],
        metrics: { loadSeconds, fmaPeak: peak, batches: metrics, rssPeakMiB: peakRssMiB() },
      };
    },
  };
}

/** hf_baseline.py's image config. */
function visionConfig(extra: Record<string, unknown>): PerceiverConfig {
  return new PerceiverConfig({
    num_latents: 512, d_latents: 1024, num_blocks: 8, num_self_attends_per_block: 6, num_cross_attention_heads: 1,
    num_self_attention_heads: 8, num_labels: 1000, ...extra,
  });
}

export const visionLearnedCpuCase = headCase({
  name: 'vision-learned-cpu',
  description: 'PerceiverForImageClassificationLearned, deepmind/vision-perceiver-learned shape, 224x224, random weights, CPU float32',
  gflopPerItem: 475.9,
  unit: 'image',
  build: () => new PerceiverForImageClassificationLearned(visionConfig({ image_size: 224, d_model: 512 })),
  input: (batch) => new Tensor('float32', [batch, 3, 224, 224], randomValues(batch * 3 * 224 * 224, 7)),
  expectedShape: (batch) => [batch, 1000],
});

export const opticalFlowCpuCase = headCase({
  name: 'optical-flow-cpu',
  description: 'PerceiverForOpticalFlow, deepmind/optical-flow-perceiver shape, one 368x496 frame pair, random weights, CPU float32',
  gflopPerItem: 1750,
  unit: 'pair',
  build: () =>
    new PerceiverForOpticalFlow(
      new PerceiverConfig({
        num_latents: 2048, d_latents: 512, d_model: 322, num_blocks: 1, num_self_attends_per_block: 24,
        num_self_attention_heads: 16, num_cross_attention_heads: 1,
      }),
    ),
  input: (batch) => new Tensor('float32', [batch, 2, 27, 368, 496], randomValues(batch * 2 * 27 * 368 * 496, 11)),
  expectedShape: (batch) => [batch, 368, 496, 2],
});
