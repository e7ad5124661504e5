/**
 * language-cpu: PerceiverForMaskedLM at the full deepmind/language-perceiver shape (256 latents x
 * 1280, d_model 768, 26 self-attends, 2048 byte positions, vocabulary 262) with random weights, on
 * the CPU backend. Validate-then-time: one forward per batch size is checked (shape, finite
 * logits), one more warms up, then `iterations` forwards are timed and the median reported. The
 * machine's FMA peak on the engine's threads is measured before and after the model runs; the
 * model's rate is reported as a fraction of the better of the two (until 2026-12-02 the reference
 * was OpenBLAS's sgemm rate, see measureFmaPeak in common.ts).
 */
import { PerceiverConfig, PerceiverForMaskedLM, RandomWeightStore, Tensor, type PerceiverModelOutput } from '../lib/index.js';
import {
  type BenchCase,
  type BenchOptions,
  type CaseReport,
  type FmaPeak,
  fmt,
  measureFmaPeak,
  median,
  peakRssMiB,
  secondsSince,
  cpuSecondsSince,
} from './common.js';

/** The config of deepmind/language-perceiver (as ../shared/anchors/hf_baseline.py builds it). */
export function languagePerceiverConfig(): PerceiverConfig {
  return new PerceiverConfig({ qk_channels: 256, v_channels: 1280, architectures: ['PerceiverForMaskedLM'] });
}

/** Forward FLOPs per 2048-byte sequence, matrix products only, as the anchors' flops.py counts them. */
export const ANCHOR_GFLOP_PER_SEQUENCE = 120.9;

/** The fraction of the FMA peak the forward should reach. */
export const GOAL_FRACTION = 0.6;

/** Matrix-product FLOPs of one PerceiverLayer (attention + MLP) for one item. */
function layerFlops(nq: number, nk: number, qDim: number, kvDim: number, qk: number, v: number, out: number, widening: number): number {
  const projections = 2 * nq * qDim * qk + 2 * nk * kvDim * qk + 2 * nk * kvDim * v + 2 * nq * v * out;
  const attention = 2 * nq * nk * qk + 2 * nq * nk * v;
  const mlp = 2 * (2 * nq * out * out * widening);
  return projections + attention + mlp;
}

/**
 * Matrix-product FLOPs of one PerceiverForMaskedLM forward for one sequence, from the config, so
 * the 120.9 GFLOP figure is checked rather than trusted. Mirrors transformers' modules: the
 * encoder's cross-attention (latents attend to the embedded bytes), the self-attention stack, the
 * decoder's cross-attention (2048 position queries attend to the latents; qk 8*32, v = d_model)
 * and the embedding decoder (a product with the 262 x d_model embedding table).
 */
export function maskedLmFlopsPerSequence(cfg: PerceiverConfig): number {
  const n = cfg.max_position_embeddings;
  const latents = cfg.num_latents;
  const L = cfg.d_latents;
  const D = cfg.d_model;
  const crossQk = cfg.qk_channels ?? L;
  const crossV = cfg.v_channels ?? crossQk;
  const selfQk = cfg.qk_channels ?? L;
  const selfV = cfg.v_channels ?? selfQk;
  const encoderCross = layerFlops(latents, n, L, D, crossQk, crossV, L, cfg.cross_attention_widening_factor);
  const selfLayer = layerFlops(latents, latents, L, L, selfQk, selfV, L, cfg.self_attention_widening_factor);
  const selfLayers = cfg.num_blocks * cfg.num_self_attends_per_block;
  const decoderCross = layerFlops(n, latents, D, L, 8 * 32, D, D, 1);
  const embeddingDecoder = 2 * n * D * cfg.vocab_size;
  return encoderCross + selfLayers * selfLayer + decoderCross + embeddingDecoder;
}

const FMA_PEAK_REPEATS = 3;

/** Reproducible byte ids in 6..261 (the byte range above the special tokens), xorshift32. */
function inputIds(batch: number, seq: number, seed: number): BigInt64Array {
  const ids = new BigInt64Array(batch * seq);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < ids.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    ids[i] = BigInt(6 + (x % 256));
  }
  return ids;
}

/** Throws unless the output is logits [batch, seq, vocab] with every value finite. */
function checkOutput(out: PerceiverModelOutput, batch: number, seq: number, vocab: number): void {
  const logits = out.logits;
  if (!logits) throw new Error('the forward returned no logits');
  const want = [batch, seq, vocab];
  if (logits.shape.length !== 3 || logits.shape.some((d, i) => d !== want[i])) {
    throw new Error(`logits shape [${logits.shape.join(', ')}], expected [${want.join(', ')}]`);
  }
  const data = logits.data;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) throw new Error(`logits[${i}] = ${data[i]} is not finite (batch ${batch})`);
  }
}

export interface BatchResult {
  batch: number;
  seconds: number[];
  medianSeconds: number;
  sequencesPerSecond: number;
  gflops: number;
  fractionOfFmaPeak: number;
  meetsGoal: boolean;
  /** CPU seconds per wall second over the timed forwards: below the core count, cores sat idle or other work had them. */
  coresUsed: number;
}

export const languageCpuCase: BenchCase = {
  name: 'language-cpu',
  description: 'PerceiverForMaskedLM, deepmind/language-perceiver shape (2048 bytes), random weights, CPU float32',
  defaultBatches: [1, 8],

  unavailable(): string | undefined {
    return undefined; // the CPU backend is always built
  },

  async run(options: BenchOptions): Promise<CaseReport> {
    const { iterations, log } = options;
    const batches = options.batches ?? this.defaultBatches;
    const cfg = languagePerceiverConfig();
    const seq = cfg.max_position_embeddings;
    const vocab = cfg.vocab_size;
    const computedGflop = maskedLmFlopsPerSequence(cfg) / 1e9;
    if (Math.abs(computedGflop - ANCHOR_GFLOP_PER_SEQUENCE) > 0.05) {
      throw new Error(`FLOPs per sequence from the config are ${computedGflop.toFixed(2)} G, the anchor says ${ANCHOR_GFLOP_PER_SEQUENCE} G`);
    }
    log(`FMA peak (before), best of ${FMA_PEAK_REPEATS}`);
    const before: FmaPeak = await measureFmaPeak(FMA_PEAK_REPEATS);

    log('loading PerceiverForMaskedLM with random weights');
    const loadStart = performance.now();
    const model = await new PerceiverForMaskedLM(cfg).loadWeights(new RandomWeightStore(1));
    const loadSeconds = secondsSince(loadStart);
    const rssAfterLoad = peakRssMiB();

    // coresUsed: this process's CPU time over the timed wall time; below the core count means
    // the engine left cores idle or other work took them.
    const timed: { batch: number; seconds: number[]; coresUsed: number }[] = [];
    try {
      for (const batch of batches) {
        const inputs = new Tensor('int64', [batch, seq], inputIds(batch, seq, 1234 + batch));
        log(`batch ${batch}: validation forward`);
        checkOutput(await model.forward({ inputs }), batch, seq, vocab);
        log(`batch ${batch}: warm-up forward`);
        await model.forward({ inputs });
        const seconds: number[] = [];
        let cpuSeconds = 0;
        for (let i = 0; i < iterations; i++) {
          const cpuStart = process.cpuUsage();
          const start = performance.now();
          const out = await model.forward({ inputs });
          seconds.push(secondsSince(start));
          cpuSeconds += cpuSecondsSince(cpuStart);
          checkOutput(out, batch, seq, vocab); // outside the timed span
          log(`batch ${batch}: forward ${i + 1}/${iterations} ${seconds[i]!.toFixed(3)} s`);
        }
        timed.push({ batch, seconds, coresUsed: cpuSeconds / seconds.reduce((a, b) => a + b, 0) });
      }
    } finally {
      await model.dispose();
    }

    log(`FMA peak (after), best of ${FMA_PEAK_REPEATS}`);
    const after: FmaPeak = await measureFmaPeak(FMA_PEAK_REPEATS);
    const fmaPeak = Math.max(before.gflops, after.gflops);

    const results: BatchResult[] = timed.map(({ batch, seconds, coresUsed }) => {
      const medianSeconds = median(seconds);
      const gflops = (ANCHOR_GFLOP_PER_SEQUENCE * batch) / medianSeconds;
      const fractionOfFmaPeak = gflops / fmaPeak;
      return {
        batch,
        seconds,
        medianSeconds,
        sequencesPerSecond: batch / medianSeconds,
        gflops,
        fractionOfFmaPeak,
        meetsGoal: fractionOfFmaPeak >= GOAL_FRACTION,
        coresUsed,
      };
    });
    const rssPeak = peakRssMiB();

    return {
      name: this.name,
      description: this.description,
      tables: [
        {
          title: `FMA peak (register-only loop, ${before.isa} kernels, ${before.threads} threads, best of ${FMA_PEAK_REPEATS}), GFLOP/s`,
          headers: ['before', 'after'],
          rows: [[fmt(before.gflops), fmt(after.gflops)]],
        },
        {
          title: `forward, median of ${iterations} after 1 validation + 1 warm-up; ${ANCHOR_GFLOP_PER_SEQUENCE} GFLOP per sequence; FMA peak ${fmt(fmaPeak)} GFLOP/s`,
          headers: ['batch', 's/forward', 'min s', 'seq/s', 'GFLOP/s', '% of FMA peak', `goal ≥${GOAL_FRACTION * 100}%`, 'cores used'],
          rows: results.map((r) => [
            String(r.batch),
            fmt(r.medianSeconds, 3),
            fmt(Math.min(...r.seconds), 3),
            fmt(r.sequencesPerSecond, 2),
            fmt(r.gflops),
            fmt(r.fractionOfFmaPeak * 100) + ' %',
            r.meetsGoal ? 'met' : 'not met',
            fmt(r.coresUsed, 2),
          ]),
        },
      ],
      notes: [
        `model load (random weights, RandomWeightStore(1)): ${fmt(loadSeconds, 2)} s`,
        `RSS peak: ${fmt(rssAfterLoad, 0)} MiB after load, ${fmt(rssPeak, 0)} MiB at the end`,
        `FLOPs per sequence from the config: ${fmt(computedGflop, 2)} G (anchor: ${ANCHOR_GFLOP_PER_SEQUENCE} G)`,
      ],
      metrics: {
        gflopPerSequence: ANCHOR_GFLOP_PER_SEQUENCE,
        gflopPerSequenceFromConfig: computedGflop,
        loadSeconds,
        rssPeakMiB: rssPeak,
        rssAfterLoadMiB: rssAfterLoad,
        fmaPeakBefore: before,
        fmaPeakAfter: after,
        fmaPeak,
        goalFraction: GOAL_FRACTION,
        batches: results,
      },
    };
  },
};
