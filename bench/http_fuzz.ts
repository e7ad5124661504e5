/**
 * HTTP fuzz of the service (`npm run bench:fuzz-http`): seeded random requests (bench/http_fuzz_cases.ts)
 * against a text model and an image model served in this process on 127.0.0.1.
 *
 *   node dist/bench/http_fuzz.js [--cases 10000] [--seed 1] [--concurrency 8] [--json FILE]
 *
 * The cases are split evenly between the two servers. Exits 1 if any case got a 5xx, hung
 * (no answer within 30 s) or met a network error that an oversized body does not explain, or if a
 * server stops answering /health; 2 on bad arguments. Prints a summary, then one JSON line.
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { AutoModel, PerceiverImageProcessor } from '../lib/index.js';
import { packageRoot } from '../lib/native/binding.js';
import { serve } from '../lib/serving/server.js';
import { machineInfo } from './common.js';
import { runFuzz, type FuzzReport } from './http_fuzz_cases.js';

const MAX_BODY_BYTES = 1024 * 1024;
const TIMEOUT_MS = 30_000;

async function main(): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ options: { cases: { type: 'string' }, seed: { type: 'string' }, concurrency: { type: 'string' }, json: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }).values;
  } catch (error) {
    console.error((error as Error).message);
    return 2;
  }
  const usage = 'usage: node dist/bench/http_fuzz.js [--cases 10000] [--seed 1] [--concurrency 8] [--json FILE]';
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const number = (name: string, fallback: number): number => {
    const raw = values[name];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!/^\d+$/.test(String(raw)) || !Number.isSafeInteger(n) || n < 1) throw new Error(`--${name} wants a positive integer, got '${raw}'\n${usage}`);
    return n;
  };
  let cases: number;
  let seed: number;
  let concurrency: number;
  try {
    cases = number('cases', 10_000);
    seed = number('seed', 1);
    concurrency = number('concurrency', 8);
  } catch (error) {
    console.error((error as Error).message);
    return 2;
  }

  const machine = machineInfo();
  const validImage = await sharp(Buffer.alloc(12 * 9 * 3, 99), { raw: { width: 12, height: 9, channels: 3 } }).png().toBuffer();
  const targets = [
    { name: 'text-classification', imageProcessor: undefined },
    { name: 'image-fourier', imageProcessor: new PerceiverImageProcessor({ size: { height: 8, width: 10 }, doCenterCrop: false }) },
  ];
  console.log(`perceiver-io HTTP fuzz, ${machine.date}; ${machine.cpuModel}, ${machine.cores} cores, load ${machine.loadAverage.map((x) => x.toFixed(2)).join(' ')}`);
  const reports: (FuzzReport & { model: string; seed: number; seconds: number; healthAfter: number })[] = [];
  for (let i = 0; i < targets.length; i++) {
    const target = targets[i]!;
    const model = await AutoModel.fromPretrained(resolve(packageRoot(), 'test/fixtures', target.name));
    const server = await serve(model, { maxBodyBytes: MAX_BODY_BYTES, maxDelayMs: 1, ...(target.imageProcessor ? { imageProcessor: target.imageProcessor } : {}) });
    try {
      const count = Math.floor(cases / targets.length) + (i < cases % targets.length ? 1 : 0);
      const started = performance.now();
      const report = await runFuzz(server.url, { seed: seed + i, count, concurrency, timeoutMs: TIMEOUT_MS, validImage, maxBodyBytes: MAX_BODY_BYTES });
      const seconds = (performance.now() - started) / 1000;
      const healthAfter = (await fetch(`${server.url}/health`).catch(() => undefined))?.status ?? 0;
      reports.push({ ...report, model: target.name, seed: seed + i, seconds, healthAfter });
      console.log(
        `- ${target.name} (seed ${seed + i}): ${report.cases} cases in ${seconds.toFixed(1)} s, statuses ${JSON.stringify(report.statuses)}, ` +
          `${report.cutOff} oversized bodies cut off, slowest ${report.maxMs.toFixed(0)} ms, ${report.failures.length} failures, /health after: ${healthAfter}`,
      );
      for (const f of report.failures.slice(0, 10)) console.log(`    failure: case ${f.index} (${f.kind}) ${f.method} ${f.path}: ${f.status ?? f.error}`);
    } finally {
      await server.close();
      await model.dispose();
    }
  }
  const total = reports.reduce((n, r) => n + r.cases, 0);
  const failures = reports.reduce((n, r) => n + r.failures.length, 0);
  const pass = failures === 0 && reports.every((r) => r.healthAfter === 200) && total === cases;
  console.log(pass ? `\nPASS: ${total} cases, no 5xx, no hang, servers alive` : `\nFAIL: ${failures} failures over ${total} cases`);
  const json = JSON.stringify({ bench: 'http-fuzz', machine, cases: total, seed, concurrency, reports, pass });
  console.log(json);
  if (typeof values.json === 'string') writeFileSync(values.json, json + '\n');
  return pass ? 0 : 1;
}

process.exitCode = await main();
