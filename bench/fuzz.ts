/**
 * Fuzz harness for everything perceiver-io parses from untrusted files: safetensors headers,
 * pytorch_model.bin archives (zip and legacy) and config.json. Each run mutates a real seed
 * file and feeds it to the parser; the only acceptable outcomes are a successful parse or a
 * PerceiverError. Anything else (a TypeError, a RangeError, an out-of-memory, a hang past the
 * time limit, a crash of the process) is a finding.
 *
 *   node dist/bench/fuzz.js [--iterations 10000] [--seed 1] [--format safetensors,bin,config]
 *
 * test/fuzz.test.ts runs a short pass of the same harness in CI.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoModel } from '../lib/auto.js';
import { PerceiverConfig } from '../lib/config.js';
import { PerceiverError } from '../lib/errors.js';
import { parsePytorchCheckpoint } from '../lib/io/pytorch.js';
import { parseSafetensors } from '../lib/io/safetensors.js';
import { packageRoot } from '../lib/native/binding.js';
import { makeZip } from './zip.js';

export type Format = 'safetensors' | 'bin' | 'config';

export interface FuzzReport {
  format: Format;
  runs: number;
  accepted: number;
  rejected: number;
  findings: { input: string; error: string }[];
  slowestMs: number;
}

/** Runs slower than this count as hangs. */
export const HANG_MS = 2000;

export class Random {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0 || 1;
  }
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(list: readonly T[]): T {
    return list[this.int(list.length)]!;
  }
}

const INTERESTING = [0, 1, 0x7f, 0x80, 0xff, 0x00];
const INTERESTING_NUMBERS = ['0', '-1', '1e308', '-1e308', '9007199254740993', '18446744073709551616', '1.5', 'NaN', '[]', '{}', 'null', '"x"', 'true'];

/** Generic byte-level mutations, stacked a few at a time. */
function mutateBytes(seed: Uint8Array, rng: Random, focus?: [number, number]): Uint8Array {
  let out = Uint8Array.from(seed);
  const [lo, hi] = focus ?? [0, out.length];
  const rounds = 1 + rng.int(4);
  for (let r = 0; r < rounds; r++) {
    const at = lo + rng.int(Math.max(1, Math.min(hi, out.length) - lo));
    switch (rng.int(7)) {
      case 0: // bit flip
        out[at] = (out[at] ?? 0) ^ (1 << rng.int(8));
        break;
      case 1: // interesting byte
        out[at] = rng.pick(INTERESTING);
        break;
      case 2: // random byte run
        for (let i = 0; i < 1 + rng.int(8) && at + i < out.length; i++) out[at + i] = rng.int(256);
        break;
      case 3: // truncate
        out = out.slice(0, at);
        break;
      case 4: { // delete a range
        const n = 1 + rng.int(16);
        out = Uint8Array.from([...out.slice(0, at), ...out.slice(at + n)]);
        break;
      }
      case 5: { // duplicate a range
        const n = 1 + rng.int(32);
        out = Uint8Array.from([...out.slice(0, at), ...out.slice(at, at + n), ...out.slice(at)]);
        break;
      }
      default: { // little-endian u64/u32 field set to an extreme
        const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
        if (at + 8 <= out.length) view.setBigUint64(at, rng.pick([0n, 1n, 0xffffffffn, 0x7fffffffffffffffn, 0xffffffffffffffffn, BigInt(out.length)]), true);
        break;
      }
    }
  }
  return out;
}

/** Mutations of a JSON text that keep it mostly JSON: numbers and strings swapped for extremes. */
function mutateJsonText(text: string, rng: Random): string {
  const tokens = text.split(/("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)/i);
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    const i = rng.int(tokens.length);
    if (/^-?\d/.test(tokens[i]!) || tokens[i]!.startsWith('"')) tokens[i] = rng.pick(INTERESTING_NUMBERS.concat(['"F64"', '"BF16"', '"U64"', '"I8"', '"PerceiverForTimeTravel"', '"__proto__"', '"toString"']));
  }
  return tokens.join('');
}

/** The entries of a STORED zip as written by torch.save (seed material for the re-wrapping mutator). */
function storedEntries(bytes: Uint8Array): [string, Uint8Array][] {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: [string, Uint8Array][] = [];
  let at = 0;
  while (at + 30 <= buf.length && buf.readUInt32LE(at) === 0x04034b50) {
    const size = buf.readUInt32LE(at + 18);
    const nameLength = buf.readUInt16LE(at + 26);
    const extraLength = buf.readUInt16LE(at + 28);
    const name = buf.toString('utf8', at + 30, at + 30 + nameLength);
    const start = at + 30 + nameLength + extraLength;
    out.push([name, buf.subarray(start, start + size)]);
    at = start + size;
  }
  return out;
}

function seeds(): Record<Format, Uint8Array[]> {
  const root = packageRoot();
  const read = (...p: string[]) => new Uint8Array(readFileSync(join(root, 'test', ...p)));
  return {
    safetensors: [read('fixtures', 'text-mlm', 'model.safetensors'), read('fixtures', 'text-classification', 'io.safetensors'), read('fixtures-bin', 'text-classification', 'views.expected.safetensors')],
    bin: [
      read('fixtures-bin', 'text-classification', 'pytorch_model.bin'),
      read('fixtures-bin', 'text-classification', 'pytorch_model.legacy.bin'),
      read('fixtures-bin', 'text-classification', 'views.bin'),
    ],
    config: ['text-mlm', 'image-conv', 'optical-flow', 'multimodal-autoencoding'].map((n) => read('fixtures', n, 'config.json')),
  };
}

function mutate(format: Format, seed: Uint8Array, rng: Random): Uint8Array {
  if (format === 'safetensors') {
    const headerEnd = 8 + Number(Buffer.from(seed.buffer, seed.byteOffset, 8).readBigUInt64LE(0));
    if (rng.next() < 0.5) {
      const text = mutateJsonText(Buffer.from(seed.subarray(8, headerEnd)).toString('utf8'), rng);
      const header = Buffer.from(text);
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(header.length));
      return Buffer.concat([len, header, seed.subarray(headerEnd)]);
    }
    return mutateBytes(seed, rng, [0, Math.min(seed.length, headerEnd + 64)]);
  }
  if (format === 'bin') {
    const entries = storedEntries(seed);
    if (entries.length > 0 && rng.next() < 0.6) {
      // Mutate the pickle (or a storage) and re-wrap with valid CRCs so the parser behind the zip layer is reached.
      const target = rng.next() < 0.8 ? entries.findIndex(([n]) => n.endsWith('data.pkl')) : rng.int(entries.length);
      const i = target < 0 ? 0 : target;
      entries[i] = [entries[i]![0], mutateBytes(entries[i]![1], rng)];
      const method = rng.next() < 0.2 ? 8 : 0;
      return makeZip(entries.map(([name, data]) => ({ name, data, method })));
    }
    return mutateBytes(seed, rng);
  }
  return rng.next() < 0.7 ? Buffer.from(mutateJsonText(Buffer.from(seed).toString('utf8'), rng)) : mutateBytes(seed, rng);
}

function parse(format: Format, input: Uint8Array): void {
  if (format === 'safetensors') parseSafetensors(input, 'fuzz.safetensors');
  else if (format === 'bin') parsePytorchCheckpoint(input, 'fuzz.bin');
  else {
    let json: unknown;
    try {
      json = JSON.parse(Buffer.from(input).toString('utf8'));
    } catch {
      return; // not JSON: PerceiverConfig.fromPretrained turns this into a ConfigError before any use
    }
    const config = new PerceiverConfig(json as Record<string, unknown>);
    const Head = AutoModel.headFor(config);
    new Head(config); // the whole module tree, with every derived channel count
  }
}

export function fuzz(format: Format, iterations: number, seed = 1): FuzzReport {
  const rng = new Random(seed);
  const pool = seeds()[format];
  const report: FuzzReport = { format, runs: 0, accepted: 0, rejected: 0, findings: [], slowestMs: 0 };
  for (let i = 0; i < iterations; i++) {
    const input = mutate(format, rng.pick(pool), rng);
    const start = performance.now();
    try {
      parse(format, input);
      report.accepted++;
    } catch (error) {
      if (error instanceof PerceiverError) report.rejected++;
      else report.findings.push({ input: Buffer.from(input.subarray(0, 256)).toString('base64'), error: String((error as Error)?.stack ?? error).slice(0, 500) });
    }
    const ms = performance.now() - start;
    report.slowestMs = Math.max(report.slowestMs, ms);
    if (ms > HANG_MS) report.findings.push({ input: Buffer.from(input.subarray(0, 256)).toString('base64'), error: `took ${ms.toFixed(0)} ms` });
    report.runs++;
  }
  return report;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { parseArgs } = await import('node:util');
  const { values } = parseArgs({ options: { iterations: { type: 'string', default: '10000' }, seed: { type: 'string', default: '1' }, format: { type: 'string', default: 'safetensors,bin,config' } } });
  let failed = false;
  for (const format of values.format!.split(',') as Format[]) {
    const start = performance.now();
    const r = fuzz(format, Number(values.iterations), Number(values.seed));
    failed ||= r.findings.length > 0;
    console.log(`${format}: ${r.runs} inputs, ${r.accepted} parsed, ${r.rejected} rejected with a typed error, ${r.findings.length} findings, slowest ${r.slowestMs.toFixed(1)} ms, ${((performance.now() - start) / 1000).toFixed(1)} s`);
    for (const f of r.findings.slice(0, 5)) console.log(`  finding: ${f.error.split('\n')[0]}\n    input (base64, first 256 bytes): ${f.input}`);
  }
  process.exitCode = failed ? 1 : 0;
}
