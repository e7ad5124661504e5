/**
 * Collection-scale batch embedding: N small images on a local S3-compatible server (s3rver on
 * 127.0.0.1) through the CLI (`perceiver-io embed s3://... --s3-endpoint ...`) into compacted
 * Parquet and into LanceDB. Reports items/s, parts written and files left, the CLI's peak RSS
 * (VmHWM of /proc/PID/status, polled), the engine's busy share and the decoding threads (from the
 * CLI's summary), the CPU seconds of the CLI's main thread and of all its threads (polled from
 * /proc: what moved off the main thread shows there whatever the machine's load), and the
 * machine's load average before and after each run (the figures of a shared machine mean little
 * without it).
 *
 *   npx tsc -p tsconfig.build.json && node dist/bench/scale.js [--items 10000] [--batch-size 64] [--model DIR]
 *     [--decode-workers N] [--parquet-only]
 *
 * The model defaults to test/fixtures/image-learned (8x8 images, 16 latents x 64): a tiny model, so
 * the figures measure the pipeline (S3 reads, decoding, writing, compaction), not the engine.
 */
import { spawn } from 'node:child_process';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { mkdtemp } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { S3Client, PutObjectCommand, CreateBucketCommand } from '@aws-sdk/client-s3';
import { packageRoot } from '../lib/native/binding.js';
import { processCpuSeconds } from './proc.js';

const { values } = parseArgs({
  options: {
    items: { type: 'string', default: '10000' },
    'batch-size': { type: 'string', default: '64' },
    model: { type: 'string' },
    // Passed to the CLI when given (0: decode on the main thread); otherwise the CLI's default.
    'decode-workers': { type: 'string' },
    'parquet-only': { type: 'boolean', default: false },
  },
});
const ITEMS = Number(values.items);
const ROOT = packageRoot();
const MODEL = (values.model as string | undefined) ?? join(ROOT, 'test', 'fixtures', 'image-learned');
const BIN = join(ROOT, 'dist', 'lib', 'cli', 'main.js');

process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
process.env.AWS_REGION = 'us-east-1';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

interface Run {
  seconds: number;
  peakRssMiB: number;
  /** CPU seconds of the main thread and of the whole process, at the last poll. */
  mainCpu: number;
  processCpu: number;
  summary: string;
}

/** Runs the CLI, polling its peak RSS. */
function runCli(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let peakKiB = 0;
    let mainCpu = NaN;
    let processCpu = NaN;
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const poll = setInterval(() => {
      const main = processCpuSeconds(child.pid!, child.pid!);
      const all = processCpuSeconds(child.pid!);
      if (!Number.isNaN(main) && !Number.isNaN(all)) [mainCpu, processCpu] = [main, all];
      readFile(`/proc/${child.pid}/status`, 'utf8')
        .then((text) => {
          const m = /VmHWM:\s+(\d+) kB/.exec(text);
          if (m) peakKiB = Math.max(peakKiB, Number(m[1]));
        })
        .catch(() => {});
    }, 100);
    child.on('error', reject);
    child.on('close', (code) => {
      clearInterval(poll);
      const summary = stderr.trim().split('\n').pop() ?? '';
      if (code !== 0) return reject(new Error(`exit ${code}: ${stderr.slice(-2000)}`));
      resolve({ seconds: (performance.now() - started) / 1000, peakRssMiB: peakKiB / 1024, mainCpu, processCpu, summary });
    });
  });
}

const work = await mkdtemp(join(tmpdir(), 'perceiver-bench-scale-'));
const { default: S3rver } = (await import('s3rver' as string)) as { default: new (o: object) => { run(): Promise<{ port: number }>; close(): Promise<void> } };
const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: join(work, 's3') });
const { port } = await server.run();
const endpoint = `http://127.0.0.1:${port}`;
const client = new S3Client({ endpoint, forcePathStyle: true, region: 'us-east-1' });
try {
  await client.send(new CreateBucketCommand({ Bucket: 'bench' }));
  const uploadStarted = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < ITEMS) {
        const i = next++;
        // 32x32 RGB noise, distinct per image.
        const pixels = Buffer.alloc(32 * 32 * 3);
        for (let p = 0; p < pixels.length; p++) pixels[p] = (p * 31 + i * 131 + ((p * i) >> 3)) & 255;
        const png = await sharp(pixels, { raw: { width: 32, height: 32, channels: 3 } }).png().toBuffer();
        // Prefixes of at most 1000 keys: s3rver answers a listing of a larger prefix with HTTP 500
        // (it opens every object's metadata at once: EMFILE under a 1024-file limit).
        await client.send(new PutObjectCommand({ Bucket: 'bench', Key: `images/${Math.floor(i / 1000)}/${String(i).padStart(6, '0')}.png`, Body: png }));
      }
    }),
  );
  process.stderr.write(`uploaded ${ITEMS} images in ${((performance.now() - uploadStarted) / 1000).toFixed(1)} s\n`);

  const prefixes = Array.from({ length: Math.ceil(ITEMS / 1000) }, (_, i) => `s3://bench/images/${i}/`);
  const decodeWorkers = values['decode-workers'] === undefined ? [] : ['--decode-workers', String(values['decode-workers'])];
  const common = ['--model', MODEL, '--s3-endpoint', endpoint, '--batch-size', String(values['batch-size']), ...decodeWorkers, ...prefixes];
  const load = () => loadavg()[0]!.toFixed(1);
  const results: string[] = [];
  for (const [what, out] of [
    ['compacted Parquet', join(work, 'parquet')],
    ['LanceDB', `lancedb://${join(work, 'lance')}/images`],
  ] as const) {
    if (values['parquet-only'] && what !== 'compacted Parquet') continue;
    const loadBefore = load();
    const run = await runCli(['embed', '--out', out, ...common]);
    const written = /: (\d+) written in (\d+) parts?/.exec(run.summary);
    const busy = /engine busy (\d+)%/.exec(run.summary);
    const decoders = /engine busy \d+%, ([^)]+)\)/.exec(run.summary)?.[1] ?? 'decoded on the main thread';
    let files = '';
    if (what === 'compacted Parquet') {
      const names = (await readdir(out)).filter((n) => n.endsWith('.parquet'));
      let bytes = 0;
      for (const name of names) bytes += (await stat(join(out, name))).size;
      files = `${names.length} file(s), ${(bytes / 1e6).toFixed(1)} MB`;
    } else files = 'one table (optimized)';
    const line = `| ${what} | ${ITEMS} | ${run.seconds.toFixed(1)} | ${(ITEMS / run.seconds).toFixed(0)} | ${written?.[2] ?? '?'} batch parts -> ${files} | ${run.peakRssMiB.toFixed(0)} | ${busy?.[1] ?? '?'}% | ${decoders} | ${run.mainCpu.toFixed(1)} / ${run.processCpu.toFixed(1)} | ${loadBefore} -> ${load()} |`;
    results.push(line);
    process.stderr.write(`${run.summary}\n`);
  }
  process.stdout.write(`| output | items | wall s | items/s | parts | peak RSS MiB | engine busy | decoding | CPU s main / all | load avg |\n|---|---|---|---|---|---|---|---|---|---|\n${results.join('\n')}\n`);
} finally {
  client.destroy();
  await server.close();
  await rm(work, { recursive: true, force: true });
}
