/**
 * Seeded random requests against the HTTP service, shared by test/http-fuzz.test.ts (a few hundred
 * cases in CI) and bench/http_fuzz.ts (10,000): methods, paths, content types, random, malformed,
 * huge and binary bodies, wrong field types, valid and invalid images. A case passes when the server
 * answers with a status below 500 within the time limit; an oversized body may instead be cut off
 * by the server (it answers 413 from Content-Length and closes) without counting as a failure.
 */
import { request } from 'node:http';

/** mulberry32: a small seeded PRNG, so a failing case can be replayed from its seed and index. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface FuzzCase {
  index: number;
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer | undefined;
  /** What the case is, for the report. */
  kind: string;
}

export interface FuzzOptions {
  /** A small valid image file, sent now and then (base64) so the image path is reached. */
  validImage?: Buffer;
  /** Bodies larger than this may be refused by closing the connection. */
  maxBodyBytes: number;
}

const METHODS = ['POST', 'POST', 'POST', 'POST', 'GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'];
const PATHS = ['/embed', '/classify', '/embed', '/classify', '/health', '/metrics', '/', '/embed/', '/EMBED', '/embed?x=1&y', '/classify#frag', '/%00', '/..%2f..%2fetc%2fpasswd', '/embed%20', '//embed', '/metrics?name[]=1'];
const CONTENT_TYPES = [
  'application/json',
  'application/json',
  'application/json; charset=utf-8',
  'APPLICATION/JSON',
  'application/json; charset=latin1',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=xyz',
  'image/png',
  'application/octet-stream',
  ';;;',
  '',
];
const SPECIALS = ['[MASK]', '[CLS]', '[SEP]', '[PAD]', '[BOS]', '[EOS]', '[MAS', 'K]'];

export function generateCase(random: () => number, index: number, options: FuzzOptions): FuzzCase {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  const int = (n: number): number => Math.floor(random() * n);

  const randomString = (max: number): string => {
    const n = int(max);
    let s = '';
    for (let i = 0; i < n; i++) {
      const r = random();
      if (r < 0.6) s += String.fromCharCode(32 + int(95));
      else if (r < 0.7) s += pick(SPECIALS);
      else if (r < 0.8) s += String.fromCharCode(0xd800 + int(0x800)); // lone surrogates too
      else if (r < 0.9) s += String.fromCodePoint(int(0x10ffff - 0xe000) + 0xe000);
      else s += String.fromCharCode(int(32));
    }
    return s;
  };
  const randomJson = (depth: number): unknown => {
    const r = random();
    if (depth <= 0 || r < 0.3) return pick([null, true, false, 0, -1, 1e308, -0.5, int(1e9), '', randomString(20)]);
    if (r < 0.6) return Array.from({ length: int(5) }, () => randomJson(depth - 1));
    const o: Record<string, unknown> = {};
    for (let i = int(5); i > 0; i--) o[pick(['text', 'image', 'inputs', '__proto__', 'constructor', randomString(8)])] = randomJson(depth - 1);
    return o;
  };
  const wrongType = (): unknown => pick([null, 42, true, [], ['a'], { text: 'x' }, 1.5, -0, '']);

  let kind: string;
  let body: string | Buffer | undefined;
  const r = random();
  if (r < 0.15) {
    kind = 'valid text';
    body = JSON.stringify({ text: randomString(200) });
  } else if (r < 0.25) {
    kind = 'wrong field type';
    body = JSON.stringify(pick([{ text: wrongType() }, { image: wrongType() }, { text: 'a', image: 'aGk=' }, {}]));
  } else if (r < 0.4) {
    kind = 'random JSON';
    body = JSON.stringify(randomJson(4));
  } else if (r < 0.5) {
    kind = 'malformed JSON';
    const valid = JSON.stringify({ text: randomString(30) });
    body = pick([
      valid.slice(0, int(valid.length)),
      valid + pick(['}', ',', ' x', '\u0000']),
      "{'text': 'single quotes'}",
      '{"text": NaN}',
      '{"text": "\\ud800"}',
      '{"text": "unterminated',
      '[' .repeat(1 + int(20_000)),
      '{"a":'.repeat(1 + int(5_000)),
      '\ufeff{"text": "bom"}',
      '',
    ]);
  } else if (r < 0.6) {
    kind = 'image field';
    const b64 = options.validImage && random() < 0.4 ? options.validImage.toString('base64') : Buffer.from(Array.from({ length: int(2000) }, () => int(256))).toString('base64');
    body = JSON.stringify({ image: pick([b64, `data:image/png;base64,${b64}`, b64.slice(0, int(b64.length)), '!!!', '====', b64.replace(/A/g, '*'), ' ']) });
  } else if (r < 0.7) {
    kind = 'binary body';
    body = Buffer.from(Array.from({ length: int(5000) }, () => int(256)));
  } else if (r < 0.78) {
    kind = 'huge text';
    // Beyond the main-thread parsing threshold (256 KiB), sometimes beyond the body limit.
    const size = pick([300 * 1024, 600 * 1024, options.maxBodyBytes - 64, options.maxBodyBytes + 1024]);
    body = `{"text": "${'z'.repeat(Math.max(0, size - 12))}"}`;
  } else if (r < 0.84) {
    kind = 'huge JSON';
    const n = pick([50_000, 200_000]);
    body = JSON.stringify({ text: Array.from({ length: n }, (_, i) => i) });
  } else if (r < 0.9) {
    kind = 'no body';
    body = undefined;
  } else {
    kind = 'odd path';
    body = JSON.stringify({ text: 'hello' });
  }

  const method = kind === 'odd path' ? pick(METHODS) : random() < 0.85 ? 'POST' : pick(METHODS);
  let path = kind === 'odd path' ? pick([...PATHS, `/${[...Buffer.from(randomString(30), 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')}`, `/embed?${'q'.repeat(int(4000))}`]) : random() < 0.9 ? pick(['/embed', '/classify']) : pick(PATHS);
  if (path.includes('#')) path = path.slice(0, path.indexOf('#'));
  const headers: Record<string, string> = {};
  const contentType = random() < 0.7 ? 'application/json' : pick(CONTENT_TYPES);
  if (contentType !== '') headers['content-type'] = contentType;
  const bytes = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  return { index, method, path, headers, body: method === 'GET' || method === 'HEAD' ? undefined : bytes, kind };
}

export interface CaseOutcome {
  status: number | undefined;
  /** A network error, when there was no answer. */
  error?: string;
  ms: number;
}

/** Sends one case on a fresh connection (127.0.0.1); never rejects. */
export function sendCase(url: string, c: FuzzCase, timeoutMs: number): Promise<CaseOutcome> {
  const { hostname, port } = new URL(url);
  const started = performance.now();
  return new Promise<CaseOutcome>((resolve) => {
    let done = false;
    const finish = (outcome: Omit<CaseOutcome, 'ms'>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ ...outcome, ms: performance.now() - started });
    };
    const headers = { ...c.headers, ...(c.body ? { 'content-length': String(c.body.length) } : {}) };
    const req = request({ host: hostname, port: Number(port), method: c.method, path: c.path, headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => finish({ status: res.statusCode }));
      res.on('error', () => finish({ status: res.statusCode }));
    });
    const timer = setTimeout(() => {
      req.destroy();
      finish({ status: undefined, error: `no answer within ${timeoutMs} ms` });
    }, timeoutMs);
    req.on('error', (error: NodeJS.ErrnoException) => finish({ status: undefined, error: error.code ?? error.message }));
    if (c.body) req.end(c.body);
    else req.end();
  });
}

export interface FuzzReport {
  cases: number;
  statuses: Record<string, number>;
  kinds: Record<string, number>;
  /** 5xx answers, hangs and network errors that an oversized body does not explain. */
  failures: { index: number; kind: string; method: string; path: string; status?: number; error?: string }[];
  /** Oversized bodies the server cut off instead of reading (counted, not failures). */
  cutOff: number;
  maxMs: number;
}

/** Runs `count` cases from `seed`, `concurrency` at a time. */
export async function runFuzz(url: string, options: FuzzOptions & { seed: number; count: number; concurrency: number; timeoutMs: number }): Promise<FuzzReport> {
  const random = prng(options.seed);
  const report: FuzzReport = { cases: 0, statuses: {}, kinds: {}, failures: [], cutOff: 0, maxMs: 0 };
  let next = 0;
  const cases: FuzzCase[] = [];
  // Generated up front, in order, so the sequence depends on the seed alone, not on timing.
  for (let i = 0; i < options.count; i++) cases.push(generateCase(random, i, options));
  async function lane(): Promise<void> {
    while (next < cases.length) {
      const c = cases[next++]!;
      const outcome = await sendCase(url, c, options.timeoutMs);
      report.cases++;
      report.kinds[c.kind] = (report.kinds[c.kind] ?? 0) + 1;
      report.maxMs = Math.max(report.maxMs, outcome.ms);
      const key = outcome.status === undefined ? `error:${outcome.error}` : String(outcome.status);
      report.statuses[key] = (report.statuses[key] ?? 0) + 1;
      const oversized = (c.body?.length ?? 0) > options.maxBodyBytes;
      if (outcome.status === undefined && oversized && outcome.error !== undefined && !outcome.error.startsWith('no answer')) {
        report.cutOff++;
      } else if (outcome.status === undefined || outcome.status >= 500) {
        report.failures.push({ index: c.index, kind: c.kind, method: c.method, path: c.path, status: outcome.status, error: outcome.error });
      }
    }
  }
  await Promise.all(Array.from({ length: options.concurrency }, lane));
  return report;
}
