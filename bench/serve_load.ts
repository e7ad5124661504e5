/**
 * Load benchmark of the HTTP service (`npm run bench:serve`):
 *
 *   node dist/bench/serve_load.js [--model DIR] [--clients 32] [--seconds 20] [--warmup 10]
 *     [--routes classify,embed] [--max-batch-size 16] [--max-delay-ms 5] [--memory-bar-mib 32] [--json FILE]
 *
 * Two servers run as child processes (`perceiver-io serve`, so the load generator never shares their
 * event loop): "batched" with the given batcher options and "unbatched" with --max-batch-size 1.
 * Load comes from C concurrent keep-alive clients per server (Node's fetch), each sending requests
 * back to back with texts of varied lengths.
 *
 * - Validate, then time: before any load, every text of the pool is sent once to each server and
 *   the answer compared with model.forward / model.embed run in this process (scores and
 *   embeddings within 1e-5). Under load every answer is checked again against those references.
 * - Warm-up: both servers, every route, --warmup seconds, so heaps and allocator arenas reach their
 *   working size before memory is judged. Then, per route, the batched and the unbatched server
 *   each get 2 settling seconds and --seconds measured seconds, one after the other.
 * - Measured per phase: requests/s, latency p50/p95/p99/max, the server's CPU (/proc/<pid>/stat)
 *   and this generator's, the batch sizes the server ran (its perceiver_batch_size histogram in
 *   /metrics, the difference over the window) and its RSS (/proc/<pid>/status VmRSS, sampled every
 *   second: the server's own registry has no process metrics) as start / max / end.
 * - Failed requests (non-200, network errors, wrong or unparsable answers) must be 0, warm-up
 *   included. Exits 1 if any request failed, a server died or did not exit cleanly, or a server's
 *   RSS grew by more than --memory-bar-mib from the end of the warm-up to the end of the run;
 *   2 on bad arguments. Prints a table, then one JSON line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AutoModel, PerceiverClassificationDecoder, PerceiverTextPreprocessor, PerceiverTokenizer, type PerceiverModel } from '../lib/index.js';
import { packageRoot } from '../lib/native/binding.js';
import { fmt, formatTable, machineInfo, type MachineInfo, type Table } from './common.js';
import { machineBusySeconds, processCpuSeconds, rssMiB } from './proc.js';

type Route = 'classify' | 'embed';

interface CliOptions {
  model: string;
  clients: number;
  seconds: number;
  warmup: number;
  routes: Route[];
  maxBatchSize: number;
  maxDelayMs: number;
  memoryBarMiB: number;
  json?: string;
}

class UsageError extends Error {}

const USAGE = `usage: node dist/bench/serve_load.js [--model DIR] [--clients 32] [--seconds 20] [--warmup 10]
  [--routes classify,embed] [--max-batch-size 16] [--max-delay-ms 5] [--memory-bar-mib 32] [--json FILE]
  --model DIR            a text checkpoint folder (default test/fixtures/text-classification)
  --clients N            concurrent keep-alive clients (default 32)
  --seconds S            measured seconds per route and server (default 20)
  --warmup S             unmeasured load on both servers and routes before anything is measured (default 10)
  --routes LIST          classify, embed or both (default both; embed only for non-classifiers)
  --max-batch-size N     the batched server's batcher (default 16; the unbatched server uses 1)
  --max-delay-ms N       the batched server's batcher (default 5)
  --memory-bar-mib N     most a server's RSS may grow after warm-up (default 32)
  --json FILE            also write the JSON line to FILE`;

/** Answers compared with this process's own forward. */
const TOLERANCE = 1e-5;
/** A request taking longer than this counts as failed (a hung server must not hang the bench). */
const REQUEST_TIMEOUT_MS = 30_000;

function positive(text: string | undefined, flag: string, fallback: number, allowZero = false): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || !Number.isFinite(n) || (allowZero ? n < 0 : n <= 0)) {
    throw new UsageError(`${flag} wants a ${allowZero ? 'non-negative' : 'positive'} number, got '${text}'`);
  }
  return n;
}

function positiveInt(text: string | undefined, flag: string, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`${flag} wants a positive integer, got '${text}'`);
  return n;
}

function parseCli(argv: string[]): CliOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      clients: { type: 'string' },
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      routes: { type: 'string' },
      'max-batch-size': { type: 'string' },
      'max-delay-ms': { type: 'string' },
      'memory-bar-mib': { type: 'string' },
      json: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  const routes = (values.routes ?? 'classify,embed').split(',').map((r) => r.trim());
  for (const r of routes) if (r !== 'classify' && r !== 'embed') throw new UsageError(`--routes wants classify and/or embed, got '${r}'`);
  const model = values.model ?? resolve(packageRoot(), 'test/fixtures/text-classification');
  return {
    model: isAbsolute(model) ? model : resolve(model),
    clients: positiveInt(values.clients, '--clients', 32),
    seconds: positive(values.seconds, '--seconds', 20),
    warmup: positive(values.warmup, '--warmup', 10, true),
    routes: [...new Set(routes)] as Route[],
    maxBatchSize: positiveInt(values['max-batch-size'], '--max-batch-size', 16),
    maxDelayMs: positiveInt(values['max-delay-ms'], '--max-delay-ms', 5),
    memoryBarMiB: positive(values['memory-bar-mib'], '--memory-bar-mib', 32),
    ...(values.json !== undefined ? { json: values.json } : {}),
  };
}

const log = (line: string): void => {
  process.stderr.write(`  [${new Date().toISOString().slice(11, 19)}] ${line}\n`);
};

// ---------------------------------------------------------------------------------------------
// Request texts

/**
 * A fixed pool of texts from 1 to about 400 UTF-8 bytes, some multi-byte, so requests differ in
 * tokenization work and truncation. (The service pads every text to one length, so they all share
 * one batch shape: the lengths change the per-request work, not the grouping.)
 */
function textPool(): string[] {
  const sentences = [
    'The delivery arrived two days late and the box was crushed.',
    'Great value.',
    'I have used this kettle every morning for a year and it still boils in under three minutes.',
    'Meh.',
    'Customer service answered within an hour and replaced the part without any questions, which I did not expect.',
    'Das Essen war kalt, aber die Bedienung war freundlich.',
    'Le film est trop long mais la musique est superbe.',
    'Works as described; battery life is closer to six hours than the advertised ten.',
    '素晴らしい製品です。また買います。',
    'Returned it.',
    'After the latest update the app crashes whenever I open the settings page, so I cannot change the language back.',
    'Five stars 🌟🌟🌟🌟🌟',
  ];
  const texts: string[] = [];
  for (let i = 0; i < sentences.length; i++) {
    // One sentence alone, then runs of 2 to 4 consecutive sentences (up to about 400 bytes).
    texts.push(sentences[i]!);
    for (let k = 2; k <= 4; k++) texts.push(Array.from({ length: k }, (_, j) => sentences[(i + j * 5) % sentences.length]!).join(' '));
  }
  texts.push('a', '?', ' '.repeat(3) + 'leading and trailing spaces' + ' '.repeat(3));
  return texts;
}

interface Reference {
  /** /classify: the softmax over the labels, in label order. */
  probs?: Float64Array;
  /** /embed: mean-pooled latents. */
  embedding?: Float32Array;
}

// The reference answers are computed here on their own, not with the service's helpers, so a bug
// there cannot hide in both sides of the comparison.
function softmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp(logits[i]! - max);
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}

/** What the service should answer for each text: this process's own batch-1 forward, tokenized as serve() does. */
async function references(model: PerceiverModel<any>, texts: string[], routes: Route[]): Promise<Reference[]> {
  // The references: each text padded to min(max_position_embeddings, 2048) with truncation. serve()
  // pads a text to a power of two at or above its length (dynamic padding, lib/serving/server.ts);
  // the mask makes the answers equal within float rounding.
  const length = Math.min(model.config.max_position_embeddings, 2048);
  const tokenizer = new PerceiverTokenizer({ modelMaxLength: length });
  const out: Reference[] = [];
  for (const text of texts) {
    const enc = tokenizer.call(text, { padding: 'max_length', maxLength: length, truncation: true });
    const ref: Reference = {};
    if (routes.includes('classify')) {
      const output = await model.forward({ inputs: enc.inputIds, attentionMask: enc.attentionMask });
      ref.probs = softmax((output.logits as { toFloat32(): Float32Array }).toFloat32());
    }
    if (routes.includes('embed')) {
      ref.embedding = (await model.embed(enc.inputIds, { attentionMask: enc.attentionMask, pooling: 'mean' })).toFloat32();
    }
    out.push(ref);
  }
  return out;
}

/**
 * Milliseconds per forward of the model alone in this process, at batch 1 and at `batch`: what
 * batching can save at most, beside the HTTP and JSON work that every request pays anyway.
 */
async function forwardCost(model: PerceiverModel<any>, texts: string[], batch: number): Promise<{ batch1Ms: number; batchN: number; batchNMs: number }> {
  const length = Math.min(model.config.max_position_embeddings, 2048);
  const tokenizer = new PerceiverTokenizer({ modelMaxLength: length });
  const time = async (items: string[], repeats: number): Promise<number> => {
    const enc = tokenizer.call(items, { padding: 'max_length', maxLength: length, truncation: true });
    await model.forward({ inputs: enc.inputIds, attentionMask: enc.attentionMask }); // warm-up
    const start = performance.now();
    for (let i = 0; i < repeats; i++) await model.forward({ inputs: enc.inputIds, attentionMask: enc.attentionMask });
    return (performance.now() - start) / repeats;
  };
  const batch1Ms = await time(texts.slice(0, 1), 50);
  const batchNMs = await time(Array.from({ length: batch }, (_, i) => texts[i % texts.length]!), 10);
  return { batch1Ms, batchN: batch, batchNMs };
}

/** Undefined when the answer matches the reference, else why not. */
function checkAnswer(route: Route, body: string, ref: Reference, labels: string[]): string | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return `not JSON: ${body.slice(0, 80)}`;
  }
  if (route === 'classify') {
    const got = (parsed as { labels?: { label: string; score: number }[] }).labels;
    if (!Array.isArray(got) || got.length === 0) return 'no labels';
    const best = ref.probs!.indexOf(Math.max(...ref.probs!));
    if (got[0]!.label !== labels[best]) return `top label ${got[0]!.label}, expected ${labels[best]}`;
    for (const { label, score } of got) {
      const i = labels.indexOf(label);
      if (i < 0 || !(Math.abs(score - ref.probs![i]!) <= TOLERANCE)) return `score of ${label} ${score}, expected ${ref.probs![i]}`;
    }
    return undefined;
  }
  const got = (parsed as { embedding?: number[] }).embedding;
  const want = ref.embedding!;
  if (!Array.isArray(got) || got.length !== want.length) return `embedding of length ${Array.isArray(got) ? got.length : 'none'}, expected ${want.length}`;
  // Relative to the largest component: embeddings are not normalized.
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i]! - want[i]!) <= TOLERANCE * Math.max(1, scale))) return `embedding[${i}] ${got[i]}, expected ${want[i]}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Server child processes

interface ServerProcess {
  name: string;
  args: string[];
  child: ChildProcess;
  url: string;
  /** The last lines it wrote on stderr, for failure messages. */
  stderr: string[];
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** Every RSS sample of the run, in MiB, with its time (performance.now()). */
  rss: { at: number; mib: number }[];
}

async function startServer(name: string, model: string, batcher: { maxBatchSize: number; maxDelayMs: number }): Promise<ServerProcess> {
  const cli = fileURLToPath(new URL('../lib/cli/main.js', import.meta.url));
  const args = [cli, 'serve', '--model', model, '--port', '0', '--max-batch-size', String(batcher.maxBatchSize), '--max-delay-ms', String(batcher.maxDelayMs)];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const server: ServerProcess = { name, args: args.slice(1), child, url: '', stderr: [], exited: undefined, rss: [] };
  child.on('exit', (code, signal) => (server.exited = { code, signal }));
  server.url = await new Promise<string>((resolveUrl, reject) => {
    let buffer = '';
    const timer = setTimeout(() => reject(new Error(`${name} server: no "serving ... on URL" line within 60 s`)), 60_000);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      buffer += chunk;
      const lines = buffer.split('\n');
      buffer = lines.pop()!;
      for (const line of lines) {
        server.stderr.push(line);
        if (server.stderr.length > 20) server.stderr.shift();
        const match = /serving \S+ on (http:\/\/\S+)/.exec(line);
        if (match) {
          clearTimeout(timer);
          resolveUrl(match[1]!);
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} server exited (code ${code}) before listening: ${[...server.stderr, buffer].join(' ').trim()}`));
    });
  });
  for (const started = performance.now(); ; ) {
    const res = await fetch(`${server.url}/health`).catch(() => undefined);
    if (res?.status === 200) {
      await res.arrayBuffer();
      break;
    }
    if (performance.now() - started > 30_000) throw new Error(`${name} server: GET /health did not answer 200 within 30 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  log(`${name} server pid ${child.pid} on ${server.url} (${args.slice(2).join(' ')})`);
  return server;
}

async function stopServer(server: ServerProcess): Promise<void> {
  if (server.exited) return;
  const exited = new Promise<void>((r) => server.child.once('exit', () => r()));
  server.child.kill('SIGTERM');
  const timer = setTimeout(() => server.child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

function sampleRss(server: ServerProcess): void {
  if (!server.exited) server.rss.push({ at: performance.now(), mib: rssMiB(server.child.pid!) });
}




/**
 * The samples of one Prometheus text exposition, as `name{sorted labels}` -> value. Written here
 * because prom-client only produces this format; parsing the few lines we read needs no library.
 */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)$/.exec(line);
    if (!match) continue;
    // The servers serve one model each: its `model` label is left out (samples differing only by it are summed).
    const labels = [...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)]
      .filter((m) => m[1] !== 'model')
      .map((m) => `${m[1]}=${m[2]}`)
      .sort();
    const key = `${match[1]}{${labels.join(',')}}`;
    out.set(key, (out.get(key) ?? 0) + Number(match[3]));
  }
  return out;
}

async function scrape(server: ServerProcess): Promise<Map<string, number>> {
  const res = await fetch(`${server.url}/metrics`);
  if (res.status !== 200) throw new Error(`${server.name} server: GET /metrics answered ${res.status}`);
  return parseMetrics(await res.text());
}

const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];

interface BatchStats {
  forwards: number;
  meanBatch: number;
  /** Forwards per histogram bucket ("≤1", "2", "3-4", ...), over the measured window. */
  distribution: Record<string, number>;
  /** The server's count of 200 answers on the route over the window (a cross-check of ours). */
  serverOk: number;
  /** Non-200 answers the server counted on the route over the window. */
  serverNotOk: number;
}

function batchStats(before: Map<string, number>, after: Map<string, number>, route: Route): BatchStats {
  const path = `/${route}`;
  const diff = (key: string): number => (after.get(key) ?? 0) - (before.get(key) ?? 0);
  const forwards = diff(`perceiver_batch_size_count{route=${path}}`);
  const items = diff(`perceiver_batch_size_sum{route=${path}}`);
  const distribution: Record<string, number> = {};
  let below = 0;
  let lower = 1;
  for (const le of BATCH_BUCKETS) {
    const cumulative = diff(`perceiver_batch_size_bucket{le=${le},route=${path}}`);
    if (cumulative - below > 0) distribution[lower === le ? String(le) : `${lower}-${le}`] = cumulative - below;
    below = cumulative;
    lower = le + 1;
  }
  let serverOk = 0;
  let serverNotOk = 0;
  for (const key of new Set([...before.keys(), ...after.keys()])) {
    const match = /^perceiver_requests_total\{route=([^,]*),status=(\d+)\}$/.exec(key);
    if (!match || match[1] !== path) continue;
    if (match[2] === '200') serverOk += diff(key);
    else serverNotOk += diff(key);
  }
  return { forwards, meanBatch: forwards > 0 ? items / forwards : 0, distribution, serverOk, serverNotOk };
}

// ---------------------------------------------------------------------------------------------
// Load generation

interface Failures {
  /** Status code -> count. */
  http: Record<string, number>;
  network: number;
  wrong: number;
  /** The first few failure messages. */
  examples: string[];
}

interface PhaseResult {
  server: string;
  route: Route;
  maxBatchSize: number;
  maxDelayMs: number;
  clients: number;
  measuredSeconds: number;
  /** Successful answers completed inside the measured window. */
  requests: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p95: number; p99: number; max: number; mean: number };
  /** Every request of the phase, settling seconds included. */
  totalRequests: number;
  /** Failed requests of the phase, settling seconds included. */
  failed: number;
  failures: Failures;
  rssMiB: { start: number; max: number; end: number; growth: number };
  /**
   * CPU seconds per wall second over the measured window: the server process, this load generator
   * and the whole machine (so machine - server - loadGenerator is everything else, other work included).
   */
  coresUsed: { server: number; loadGenerator: number; machine: number };
  batches: BatchStats;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  // Nearest rank.
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

function newFailures(): Failures {
  return { http: {}, network: 0, wrong: 0, examples: [] };
}

function failedCount(f: Failures): number {
  return Object.values(f.http).reduce((a, b) => a + b, 0) + f.network + f.wrong;
}

/** The request texts and what the service must answer for each. */
interface Workload {
  bodies: string[];
  refs: Reference[];
  labels: string[];
}

/** One request: its latency in ms when the answer is a 200 and right, else undefined (counted in `failures`). */
async function sendOne(server: ServerProcess, route: Route, index: number, work: Workload, failures: Failures): Promise<number | undefined> {
  const fail = (message: string): undefined => {
    if (failures.examples.length < 5) failures.examples.push(`${server.name} /${route}: ${message}`);
    return undefined;
  };
  const sent = performance.now();
  let res: Response;
  let body: string;
  try {
    res = await fetch(`${server.url}/${route}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: work.bodies[index],
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    body = await res.text();
  } catch (error) {
    failures.network++;
    const cause = (error as { cause?: Error }).cause;
    return fail(`network: ${(error as Error).message}${cause ? ` (${cause.message})` : ''}`);
  }
  const latency = performance.now() - sent;
  if (res.status !== 200) {
    failures.http[res.status] = (failures.http[res.status] ?? 0) + 1;
    return fail(`HTTP ${res.status}: ${body.slice(0, 120)}`);
  }
  const wrong = checkAnswer(route, body, work.refs[index]!, work.labels);
  if (wrong !== undefined) {
    failures.wrong++;
    return fail(`wrong answer for text ${index}: ${wrong}`);
  }
  return latency;
}

/**
 * C clients per server, each sending back to back until `stopAt`; client k walks the pool from its
 * own offset (so concurrent requests carry different texts) and uses routes[k % routes.length].
 * Calls `onAnswer` with each right answer's completion time and latency.
 */
async function drive(
  targets: ServerProcess[],
  routes: Route[],
  clients: number,
  stopAt: number,
  work: Workload,
  failures: Failures,
  onAnswer: (done: number, latencyMs: number) => void = () => {},
): Promise<number> {
  let sent = 0;
  async function client(server: ServerProcess, id: number): Promise<void> {
    const route = routes[id % routes.length]!;
    let i = (id * 7) % work.bodies.length;
    while (performance.now() < stopAt && !server.exited) {
      sent++;
      const latency = await sendOne(server, route, i++ % work.bodies.length, work, failures);
      if (latency !== undefined) onAnswer(performance.now(), latency);
    }
  }
  await Promise.all(targets.flatMap((server) => Array.from({ length: clients }, (_, id) => client(server, id))));
  for (const server of targets) {
    if (server.exited) throw new Error(`${server.name} server exited under load (${JSON.stringify(server.exited)}): ${server.stderr.join(' ')}`);
  }
  return sent;
}

/** Seconds of load on one route before its measured window: connections open, code paths warm. */
const PHASE_SETTLE_S = 2;

async function runPhase(
  server: ServerProcess,
  route: Route,
  batcher: { maxBatchSize: number; maxDelayMs: number },
  work: Workload,
  cli: CliOptions,
): Promise<PhaseResult> {
  const failures = newFailures();
  const latencies: number[] = [];
  const measureFrom = performance.now() + PHASE_SETTLE_S * 1000;
  const stopAt = measureFrom + cli.seconds * 1000;

  let before: Map<string, number> | undefined;
  let cpuFrom = { at: 0, server: 0, machine: 0, self: process.cpuUsage() };
  const settled = new Promise<void>((r) => setTimeout(r, PHASE_SETTLE_S * 1000)).then(async () => {
    cpuFrom = { at: performance.now(), server: processCpuSeconds(server.child.pid!), machine: machineBusySeconds(), self: process.cpuUsage() };
    before = await scrape(server);
  });
  // Awaited below; if the load fails first (a server died), its rejection must not go unhandled.
  settled.catch(() => {});

  const total = await drive([server], [route], cli.clients, stopAt, work, failures, (done, latency) => {
    if (done >= measureFrom && done <= stopAt) latencies.push(latency);
  });
  await settled;
  const cpuWall = (performance.now() - cpuFrom.at) / 1000;
  const selfCpu = process.cpuUsage(cpuFrom.self);
  const coresUsed = {
    server: (processCpuSeconds(server.child.pid!) - cpuFrom.server) / cpuWall,
    loadGenerator: (selfCpu.user + selfCpu.system) / 1e6 / cpuWall,
    machine: (machineBusySeconds() - cpuFrom.machine) / cpuWall,
  };
  sampleRss(server);
  const after = await scrape(server);

  const sorted = Float64Array.from(latencies).sort();
  const mibs = server.rss.filter((s) => s.at >= measureFrom - 500).map((s) => s.mib);
  return {
    server: server.name,
    route,
    maxBatchSize: batcher.maxBatchSize,
    maxDelayMs: batcher.maxDelayMs,
    clients: cli.clients,
    measuredSeconds: cli.seconds,
    requests: latencies.length,
    requestsPerSecond: latencies.length / cli.seconds,
    latencyMs: {
      p50: percentile(sorted, 50),
      p95: percentile(sorted, 95),
      p99: percentile(sorted, 99),
      max: sorted.length ? sorted[sorted.length - 1]! : NaN,
      mean: latencies.reduce((a, b) => a + b, 0) / Math.max(1, latencies.length),
    },
    totalRequests: total,
    failed: failedCount(failures),
    failures,
    rssMiB: { start: mibs[0] ?? NaN, max: Math.max(...mibs), end: mibs[mibs.length - 1] ?? NaN, growth: (mibs[mibs.length - 1] ?? NaN) - (mibs[0] ?? NaN) },
    coresUsed,
    batches: batchStats(before!, after, route),
  };
}

/** Sends every text once, alone, and compares the answers with the references (before any timing). */
async function validateServer(server: ServerProcess, route: Route, { bodies, refs, labels }: Workload): Promise<void> {
  for (let i = 0; i < bodies.length; i++) {
    const res = await fetch(`${server.url}/${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bodies[i] });
    const body = await res.text();
    if (res.status !== 200) throw new Error(`validation: ${server.name} /${route} answered ${res.status} for text ${i}: ${body.slice(0, 200)}`);
    const wrong = checkAnswer(route, body, refs[i]!, labels);
    if (wrong !== undefined) throw new Error(`validation: ${server.name} /${route} text ${i}: ${wrong}`);
  }
}

// ---------------------------------------------------------------------------------------------

function header(m: MachineInfo, cli: CliOptions, modelName: string, texts: string[]): string {
  const bytes = texts.map((t) => Buffer.byteLength(t));
  return [
    `perceiver-io serve load benchmark, ${m.date}`,
    `cpu:     ${m.cpuModel}, ${m.cores} cores, ${fmt(m.memoryGiB, 1)} GiB, ${m.platform}`,
    `node:    ${m.node}; gemm ${m.gemm} (engine ${m.engineThreads} threads); cuda ${m.cuda}`,
    `load:    ${m.loadAverage.map((x) => x.toFixed(2)).join(' ')} (1/5/15-min load average at start)`,
    `model:   ${modelName} from ${cli.model} (CPU, float32)`,
    `clients: ${cli.clients} clients, keep-alive, back to back; ${cli.warmup} s warm-up, then per route and server ${PHASE_SETTLE_S} s settling + ${cli.seconds} s measured`,
    `texts:   ${texts.length} texts of ${Math.min(...bytes)} to ${Math.max(...bytes)} UTF-8 bytes (padded by the service to a power of two at or above each text's length)`,
  ].join('\n');
}

function formatDistribution(d: Record<string, number>): string {
  return Object.entries(d)
    .map(([k, v]) => `${k}:${v}`)
    .join(' ');
}

async function main(): Promise<number> {
  let cli: CliOptions | 'help';
  try {
    cli = parseCli(process.argv.slice(2));
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (cli === 'help') {
    console.log(USAGE);
    return 0;
  }

  let machine: MachineInfo;
  let model: PerceiverModel<any>;
  try {
    machine = machineInfo(); // loads the native addon
    model = await AutoModel.fromPretrained(cli.model, { device: 'cpu' });
  } catch (error) {
    console.error(`serve load benchmark: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
  const servers: ServerProcess[] = [];
  let sampler: NodeJS.Timeout | undefined;
  try {
    if (!(model.inputPreprocessor instanceof PerceiverTextPreprocessor)) {
      console.error(`${cli.model}: ${model.constructor.name} does not take text; this bench sends {"text": ...} (give a text checkpoint)`);
      return 2;
    }
    const canClassify = model.decoder instanceof PerceiverClassificationDecoder;
    if (!canClassify && cli.routes.includes('classify')) {
      if (cli.routes.length === 1) {
        console.error(`${cli.model}: ${model.constructor.name} is not a classifier; use --routes embed`);
        return 2;
      }
      cli.routes = cli.routes.filter((r) => r !== 'classify');
    }
    const labels = Array.from({ length: model.config.num_labels }, (_, i) => model.config.id2label[String(i)] ?? `LABEL_${i}`);
    const texts = textPool();
    const bodies = texts.map((text) => JSON.stringify({ text }));
    console.log(header(machine, cli, model.constructor.name, texts));

    log('references: this process runs every text through the model');
    const refs = await references(model, texts, cli.routes);
    const cost = await forwardCost(model, texts, cli.maxBatchSize);
    console.log(
      `forward: the model alone in this process: ${fmt(cost.batch1Ms, 2)} ms at batch 1, ${fmt(cost.batchNMs, 2)} ms at batch ${cost.batchN} ` +
        `(${fmt(cost.batchNMs / cost.batchN, 2)} ms per item)`,
    );

    const configs = [
      { name: 'batched', maxBatchSize: cli.maxBatchSize, maxDelayMs: cli.maxDelayMs },
      { name: 'unbatched', maxBatchSize: 1, maxDelayMs: cli.maxDelayMs },
    ];
    for (const c of configs) servers.push(await startServer(c.name, cli.model, c));
    const work: Workload = { bodies, refs, labels };
    for (const server of servers) for (const route of cli.routes) await validateServer(server, route, work);
    log(`validated: ${texts.length} texts x ${cli.routes.length} route(s) x 2 servers match this process's forward within ${TOLERANCE}`);

    // RSS of both servers once a second from here on, on this process's timers (/proc answers
    // even while a server's event loop is busy).
    sampler = setInterval(() => servers.forEach(sampleRss), 1000);
    // Warm-up, both servers at once, every route: heaps, allocator arenas and sockets reach their
    // working size before memory is judged; failures here count like any other.
    log(`warm-up: ${cli.clients} clients per server over ${cli.routes.map((r) => `/${r}`).join(' and ')}, ${cli.warmup} s`);
    const warmupFailures = newFailures();
    const warmupRequests = await drive(servers, cli.routes, cli.clients, performance.now() + cli.warmup * 1000, work, warmupFailures);
    servers.forEach(sampleRss);
    const memoryFrom = servers.map((server) => server.rss[server.rss.length - 1]!);

    // Per route, batched then unbatched back to back, so the pair sees the same machine load.
    const results: PhaseResult[] = [];
    for (const route of cli.routes) {
      for (let s = 0; s < servers.length; s++) {
        log(`/${route} on the ${servers[s]!.name} server: ${cli.clients} clients, ${PHASE_SETTLE_S} + ${cli.seconds} s`);
        const result = await runPhase(servers[s]!, route, configs[s]!, work, cli);
        results.push(result);
        log(`  ${fmt(result.requestsPerSecond, 0)} req/s, p99 ${fmt(result.latencyMs.p99, 1)} ms, ${result.failed} failed`);
      }
    }
    clearInterval(sampler);
    servers.forEach(sampleRss);

    // Memory per server from the end of the warm-up to its last sample: the "flat memory" check.
    const memory = servers.map((server, s) => {
      const from = memoryFrom[s]!;
      const samples = server.rss.filter((x) => x.at >= from.at).map((x) => x.mib);
      const end = samples[samples.length - 1]!;
      const phases = results.filter((r) => r.server === server.name);
      const served = phases.reduce((n, r) => n + r.totalRequests, 0);
      return {
        server: server.name,
        startMiB: from.mib,
        maxMiB: Math.max(...samples),
        endMiB: end,
        growthMiB: end - from.mib,
        /** RSS at the end of each of the server's phases: steady states to compare. */
        phaseEndsMiB: phases.map((r) => r.rssMiB.end),
        requestsAfterWarmup: served,
        growthKiBPer1000Requests: ((end - from.mib) * 1024 * 1000) / served,
        /** Every sample from the start of the warm-up, in MiB (one a second). */
        series: server.rss.map((x) => Math.round(x.mib * 10) / 10),
      };
    });
    for (const server of servers) await stopServer(server);
    const exits = servers.map((s) => ({ server: s.name, ...s.exited }));

    const table: Table = {
      title: 'Results (latency in ms, RSS in MiB; a failed request is a non-200, a network error or a wrong answer)',
      headers: ['route', 'server', 'req/s', 'p50', 'p95', 'p99', 'max', 'mean batch', 'failed', 'RSS start', 'max', 'end', 'server CPU ms/req', 'cores server/gen/machine'],
      rows: results.map((r) => [
        `/${r.route}`,
        r.maxBatchSize === 1 ? 'unbatched (max 1)' : `batched (max ${r.maxBatchSize}, ${r.maxDelayMs} ms)`,
        fmt(r.requestsPerSecond, 0),
        fmt(r.latencyMs.p50, 1),
        fmt(r.latencyMs.p95, 1),
        fmt(r.latencyMs.p99, 1),
        fmt(r.latencyMs.max, 1),
        fmt(r.batches.meanBatch, 2),
        String(r.failed),
        fmt(r.rssMiB.start, 1),
        fmt(r.rssMiB.max, 1),
        fmt(r.rssMiB.end, 1),
        fmt((r.coresUsed.server * 1000) / r.requestsPerSecond, 2),
        `${fmt(r.coresUsed.server, 2)} / ${fmt(r.coresUsed.loadGenerator, 2)} / ${fmt(r.coresUsed.machine, 2)}`,
      ]),
    };
    console.log('\n' + formatTable(table));
    console.log('');
    for (const route of cli.routes) {
      const batched = results.find((r) => r.route === route && r.server === 'batched')!;
      const unbatched = results.find((r) => r.route === route && r.server === 'unbatched')!;
      const cpuPerRequest = (r: PhaseResult): number => r.coresUsed.server / r.requestsPerSecond;
      console.log(
        `- /${route}: batched / unbatched throughput = ${fmt(batched.requestsPerSecond / unbatched.requestsPerSecond, 2)}x, ` +
          `server CPU per request = ${fmt(cpuPerRequest(batched) / cpuPerRequest(unbatched), 2)}x`,
      );
    }
    for (const r of results) {
      console.log(`- /${r.route} ${r.server}: ${r.requests} answers in the window (${r.totalRequests} with its ${PHASE_SETTLE_S} settling seconds; server counted about ${r.batches.serverOk} ok, ${r.batches.serverNotOk} not ok), ${r.batches.forwards} forwards, batch sizes ${formatDistribution(r.batches.distribution)}`);
    }
    console.log(`- warm-up: ${warmupRequests} requests to both servers, ${failedCount(warmupFailures)} failed`);
    for (const m of memory) {
      console.log(
        `- ${m.server} server RSS from the end of the warm-up to the end: ${fmt(m.startMiB, 1)} -> ${fmt(m.endMiB, 1)} MiB ` +
          `(max ${fmt(m.maxMiB, 1)}; growth ${fmt(m.growthMiB, 1)} MiB over ${m.requestsAfterWarmup} requests, bar ${cli.memoryBarMiB} MiB; ` +
          `at the end of each phase ${m.phaseEndsMiB.map((x) => fmt(x, 1)).join(', ')} MiB)`,
      );
    }

    const problems: string[] = [];
    if (failedCount(warmupFailures) > 0) problems.push(`warm-up: ${failedCount(warmupFailures)} failed requests: ${warmupFailures.examples.join(' | ')}`);
    for (const r of results) {
      if (r.failed > 0) problems.push(`/${r.route} ${r.server}: ${r.failed} failed requests (${JSON.stringify(r.failures.http)} http, ${r.failures.network} network, ${r.failures.wrong} wrong): ${r.failures.examples.join(' | ')}`);
      if (r.batches.serverNotOk > 0) problems.push(`/${r.route} ${r.server}: the server counted ${r.batches.serverNotOk} non-200 answers`);
      if (r.requests === 0) problems.push(`/${r.route} ${r.server}: no request completed in the measured window`);
    }
    for (const m of memory) if (!(m.growthMiB <= cli.memoryBarMiB)) problems.push(`${m.server} server: RSS grew ${fmt(m.growthMiB, 1)} MiB over the run (bar ${cli.memoryBarMiB})`);
    for (const e of exits) if (e.code !== 0) problems.push(`${e.server} server exited with code ${e.code} signal ${e.signal} after SIGTERM`);
    const loadAtEnd = loadavg();
    console.log(`- load: ${loadAtEnd.map((x) => x.toFixed(2)).join(' ')} at the end (1/5/15-min; this run's own processes included)`);
    console.log(problems.length === 0 ? '\nPASS: no failed request, memory within the bar' : `\nFAIL:\n${problems.map((p) => `  ${p}`).join('\n')}`);

    const json = JSON.stringify({
      bench: 'serve-load',
      machine,
      loadAverageAtEnd: loadAtEnd,
      model: { path: cli.model, architecture: model.constructor.name },
      forwardAlone: cost,
      options: cli,
      texts: texts.length,
      warmup: { seconds: cli.warmup, requests: warmupRequests, failed: failedCount(warmupFailures), failures: warmupFailures },
      results,
      memory,
      pass: problems.length === 0,
      problems,
    });
    console.log(json);
    if (cli.json !== undefined) writeFileSync(cli.json, json + '\n');
    return problems.length === 0 ? 0 : 1;
  } catch (error) {
    console.error(`serve load benchmark failed: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  } finally {
    clearInterval(sampler);
    await Promise.allSettled(servers.map(stopServer));
    await model.dispose();
  }
}

process.exitCode = await main();
