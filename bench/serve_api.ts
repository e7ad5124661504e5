/**
 * The OpenAI and TEI routes under load, fixed against dynamic padding, at the full
 * deepmind/language-perceiver shape (random weights, bench/language_cpu.ts):
 *
 *   node dist/bench/serve_api.js [--seconds 10] [--clients 4] [--batch 8] [--paddings fixed,dynamic] [--json FILE]
 *
 * For each padding ('fixed': every text padded to 2048 tokens, the old behaviour; 'dynamic': to the
 * power of two at or above its length) a server runs in this process on 127.0.0.1 and:
 * - validate, then time: three short texts are embedded through /v1/embeddings and compared with
 *   model.embed on the same text padded to 2048 (within 1e-4): the answer does not depend on the
 *   padding;
 * - three phases of --seconds each, C concurrent clients sending back to back short texts
 *   (15 to 30 bytes): the official `openai` client with one string per request, the `openai` client
 *   with --batch strings per request, and plain HTTP (fetch) to TEI's /embed with one string.
 *   Measured: requests/s, items/s, latency p50/p99, failed requests (any error or a wrong-sized
 *   answer), and this process's RSS at the start and end of each phase.
 * Then the engine alone, without HTTP: the median of 3 model.embed calls on B texts padded to 2048
 * (fixed) and to 32 (what dynamic padding gives these texts), B = 1 and --batch, to tell the
 * padding's share of a forward from the machine's noise (at this shape the 26 self-attention layers
 * over 256 latents do most of the work, whatever the input length).
 * The load generator shares the server's process (a forward takes tens to hundreds of ms here,
 * the client's share is small; bench/serve_load.ts runs servers as child processes for the small
 * fixture, where the generator's share is not). Exits 1 if any request failed or validation failed.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { PerceiverForMaskedLM, PerceiverTokenizer, RandomWeightStore } from '../lib/index.js';
import { serve } from '../lib/serving/server.js';
import { fmt, formatTable, machineInfo } from './common.js';
import { languagePerceiverConfig } from './language_cpu.js';

interface Phase {
  padding: string;
  phase: string;
  requests: number;
  items: number;
  failed: number;
  seconds: number;
  requestsPerSecond: number;
  itemsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  rssStartMiB: number;
  rssEndMiB: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const rssMiB = (): number => process.memoryUsage().rss / 2 ** 20;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { seconds: { type: 'string', default: '10' }, clients: { type: 'string', default: '4' }, batch: { type: 'string', default: '8' }, paddings: { type: 'string', default: 'fixed,dynamic' }, json: { type: 'string' } },
    strict: true,
  });
  const seconds = Number(values.seconds);
  const clients = Number(values.clients);
  const batch = Number(values.batch);
  const paddings = values.paddings!.split(',') as ('fixed' | 'dynamic')[];
  if (!(seconds > 0) || !Number.isSafeInteger(clients) || clients < 1 || !Number.isSafeInteger(batch) || batch < 1 || paddings.some((p) => p !== 'fixed' && p !== 'dynamic')) {
    console.error('usage: node dist/bench/serve_api.js [--seconds 10] [--clients 4] [--batch 8] [--paddings fixed,dynamic] [--json FILE]');
    return 2;
  }
  const machine = machineInfo();
  const model = await new PerceiverForMaskedLM(languagePerceiverConfig()).loadWeights(new RandomWeightStore(1));
  const length = model.config.max_position_embeddings;
  const tokenizer = new PerceiverTokenizer();
  const text = (i: number): string => `query ${i}: ${'short text '.slice(0, 6 + (i % 12))}`;
  const phases: Phase[] = [];
  let ok = true;

  for (const padding of paddings) {
    const server = await serve(model, { padding, modelName: 'language-perceiver', maxDelayMs: 5, maxBatchSize: 16, maxClientBatchSize: Math.max(32, batch) });
    try {
      const client = new OpenAI({ apiKey: 'unused', baseURL: `${server.url}/v1`, maxRetries: 0, timeout: 120_000 });
      // Validate: the server's answer is the text's embedding padded to the full length.
      const probe = [text(1), text(2), 'a'];
      const answer = await client.embeddings.create({ model: 'language-perceiver', input: probe, encoding_format: 'float' });
      for (const [i, t] of probe.entries()) {
        const enc = tokenizer.call(t, { padding: 'max_length', maxLength: length, truncation: true });
        const reference = (await model.embed(enc.inputIds, { attentionMask: enc.attentionMask })).data;
        const norm = Math.sqrt(reference.reduce((s, v) => s + v * v, 0));
        const diff = Math.max(...answer.data[i]!.embedding.map((v, j) => Math.abs(v - reference[j]! / norm)));
        if (!(diff < 1e-4)) {
          console.error(`validation failed (${padding}, text ${i}): max difference ${diff}`);
          ok = false;
        }
      }
      for (const [phase, itemsPerRequest, send] of [
        ['openai, 1 string', 1, (i: number) => client.embeddings.create({ model: 'language-perceiver', input: text(i) }).then((r) => r.data.length === 1 && r.data[0]!.embedding.length === model.config.d_latents)],
        [
          `openai, ${batch} strings`,
          batch,
          (i: number) => client.embeddings.create({ model: 'language-perceiver', input: Array.from({ length: batch }, (_, j) => text(i * batch + j)) }).then((r) => r.data.length === batch && r.data.every((d, j) => d.index === j)),
        ],
        [
          'HTTP /embed, 1 string',
          1,
          async (i: number) => {
            const res = await fetch(`${server.url}/embed`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: text(i) }) });
            const json = (await res.json()) as number[][];
            return res.status === 200 && json.length === 1 && json[0]!.length === model.config.d_latents;
          },
        ],
      ] as const) {
        const latencies: number[] = [];
        let failed = 0;
        let counter = 0;
        const rssStart = rssMiB();
        const started = performance.now();
        const end = started + seconds * 1000;
        await Promise.all(
          Array.from({ length: clients }, async () => {
            while (performance.now() < end) {
              const t0 = performance.now();
              const good = await (send as (i: number) => Promise<boolean>)(counter++).catch(() => false);
              if (good) latencies.push(performance.now() - t0);
              else failed++;
            }
          }),
        );
        const elapsed = (performance.now() - started) / 1000;
        latencies.sort((a, b) => a - b);
        const row: Phase = {
          padding,
          phase,
          requests: latencies.length,
          items: latencies.length * itemsPerRequest,
          failed,
          seconds: elapsed,
          requestsPerSecond: latencies.length / elapsed,
          itemsPerSecond: (latencies.length * itemsPerRequest) / elapsed,
          p50Ms: percentile(latencies, 50),
          p99Ms: percentile(latencies, 99),
          rssStartMiB: rssStart,
          rssEndMiB: rssMiB(),
        };
        phases.push(row);
        if (failed > 0) ok = false;
        console.error(`${padding} / ${phase}: ${fmt(row.requestsPerSecond, 2)} req/s, ${fmt(row.itemsPerSecond, 2)} items/s, p50 ${fmt(row.p50Ms, 0)} ms, p99 ${fmt(row.p99Ms, 0)} ms, ${failed} failed`);
      }
    } finally {
      await server.close();
    }
  }
  // The engine alone: the padding's share of a forward.
  const forwards: { batch: number; paddedLength: number; medianMs: number }[] = [];
  for (const b of [...new Set([1, batch])]) {
    for (const paddedLength of [length, 32]) {
      const enc = tokenizer.call(Array.from({ length: b }, (_, i) => text(i)), { padding: 'max_length', maxLength: paddedLength, truncation: true });
      const times: number[] = [];
      for (let r = 0; r < 3; r++) {
        const t0 = performance.now();
        await model.embed(enc.inputIds, { attentionMask: enc.attentionMask });
        times.push(performance.now() - t0);
      }
      times.sort((x, y) => x - y);
      forwards.push({ batch: b, paddedLength, medianMs: times[1]! });
      console.error(`model.embed, ${b} text(s) padded to ${paddedLength}: median ${fmt(times[1]!, 0)} ms`);
    }
  }
  await model.dispose();

  console.log(`perceiver-io serve API bench, ${machine.date}; ${machine.cpuModel}, ${machine.cores} cores, load ${machine.loadAverage.map((l) => l.toFixed(2)).join(' ')}`);
  console.log(
    formatTable({
      title: `language-perceiver shape (random weights), ${clients} clients, ${seconds} s per phase, texts of 15 to 30 bytes`,
      headers: ['padding', 'phase', 'requests/s', 'items/s', 'p50 ms', 'p99 ms', 'failed', 'RSS MiB start/end'],
      rows: phases.map((p) => [p.padding, p.phase, fmt(p.requestsPerSecond, 2), fmt(p.itemsPerSecond, 2), fmt(p.p50Ms, 0), fmt(p.p99Ms, 0), String(p.failed), `${fmt(p.rssStartMiB, 0)} / ${fmt(p.rssEndMiB, 0)}`]),
    }),
  );
  console.log(
    formatTable({
      title: 'model.embed alone (median of 3)',
      headers: ['texts', 'padded to', 'ms', 'ms per text'],
      rows: forwards.map((f) => [String(f.batch), String(f.paddedLength), fmt(f.medianMs, 0), fmt(f.medianMs / f.batch, 0)]),
    }),
  );
  const report = { bench: 'serve-api', machine, seconds, clients, batch, phases, forwards, pass: ok };
  console.log(JSON.stringify(report));
  if (values.json) writeFileSync(values.json, JSON.stringify(report, null, 2));
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
