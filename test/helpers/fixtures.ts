/** Shared helpers for tests: fixture locations, reference comparison, temporary folders. */
import type { Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors } from '../../lib/io/safetensors.js';
import type { Tensor } from '../../lib/tensor.js';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FIXTURES = join(REPO, 'test', 'fixtures');

/**
 * Where the parity suites run: the CPU by default (CI, any machine); bench/gpu-check.sh runs the
 * same files with PERCEIVER_TEST_DEVICE=cuda and each PERCEIVER_TEST_DTYPE.
 */
export const TEST_DEVICE = process.env.PERCEIVER_TEST_DEVICE || 'cpu';
export const TEST_DTYPE = (process.env.PERCEIVER_TEST_DTYPE || 'float32') as 'float32' | 'tfloat32' | 'float16' | 'bfloat16';
export const LOAD_OPTIONS = { device: TEST_DEVICE, dtype: TEST_DTYPE };

/**
 * The parity bar against the float64 reference: 1e-5 relative in float32 (the bar);
 * 1e-2 with TF32 products; 5e-2 with float16 / bfloat16 products (plus the same argmax).
 */
export const PARITY_TOLERANCE = { float32: 1e-5, tfloat32: 1e-2, float16: 5e-2, bfloat16: 5e-2 }[TEST_DTYPE];

export function fixtureDir(name: string): string {
  return join(FIXTURES, name);
}

export async function fixtureIo(name: string): Promise<Map<string, Tensor>> {
  return (await readSafetensors(join(fixtureDir(name), 'io.safetensors'))).tensors;
}

/** ||actual - expected|| / ||expected|| over the whole tensor, as the fixtures' README defines it. */
/** The same, for plain arrays (rows read back from Parquet). */
export function relativeErrorOf(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length mismatch: ${actual.length} vs ${expected.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i]! - expected[i]!;
    num += d * d;
    den += expected[i]! * expected[i]!;
  }
  return Math.sqrt(num / den);
}

export function relativeError(actual: Tensor, expected: Tensor): number {
  if (actual.size !== expected.size) throw new Error(`size mismatch: ${actual.size} vs ${expected.size}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.size; i++) {
    const e = expected.get(i);
    const d = actual.get(i) - e;
    num += d * d;
    den += e * e;
  }
  return Math.sqrt(num / den);
}

/** Asserts shape equality and relative error within tolerance. */
export function assertClose(t: Test, actual: Tensor | undefined, expected: Tensor | undefined, what: string, tolerance = PARITY_TOLERANCE): void {
  t.ok(actual, `${what}: produced`);
  t.ok(expected, `${what}: reference present`);
  if (!actual || !expected) return;
  t.same(actual.shape, expected.shape, `${what}: shape`);
  const err = relativeError(actual, expected);
  t.ok(err <= tolerance, `${what}: relative error ${err.toExponential(2)} <= ${tolerance}`);
}

export async function tempDir(t: Test, prefix = 'perceiver-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A fixture's model inputs: its `input` tensor, or `{ <modality>: input.<modality> }`. */
export function fixtureInputs(io: Map<string, Tensor>): Tensor | Record<string, Tensor> {
  const single = io.get('input');
  if (single) return single;
  const entries = [...io].filter(([k]) => k.startsWith('input.')).map(([k, v]) => [k.slice('input.'.length), v] as const);
  if (entries.length === 0) throw new Error('fixture has no "input" or "input.<modality>" tensor');
  return Object.fromEntries(entries);
}

/** A fixture's `call.subsampled_output_points.<modality>` tensors keyed by modality, or undefined. */
export function fixturePoints(io: Map<string, Tensor>): Record<string, Tensor> | undefined {
  const prefix = 'call.subsampled_output_points.';
  const entries = [...io].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v] as const);
  return entries.length ? Object.fromEntries(entries) : undefined;
}

/** A fixture's references under `prefix` ('expected.logits' or 'fp32.logits'): keyed '' for one tensor, else by modality. */
export function fixtureLogits(io: Map<string, Tensor>, prefix = 'expected.logits'): Record<string, Tensor> {
  const single = io.get(prefix);
  if (single) return { '': single };
  return Object.fromEntries([...io].filter(([k]) => k.startsWith(`${prefix}.`)).map(([k, v]) => [k.slice(prefix.length + 1), v]));
}

/** A fixture's float64 hidden states hidden.0, hidden.1, ... in order. */
export function fixtureHidden(io: Map<string, Tensor>): Tensor[] {
  const out: Tensor[] = [];
  for (let i = 0; io.has(`hidden.${i}`); i++) out.push(io.get(`hidden.${i}`)!);
  return out;
}

/** Asserts two tensors are the same to the byte: dtype, shape and data. */
export function sameTensor(t: Test, actual: Tensor | undefined, expected: Tensor, name: string): void {
  t.ok(actual, `${name} present`);
  if (!actual) return;
  t.equal(actual.dtype, expected.dtype, `${name} dtype`);
  t.same(actual.shape, expected.shape, `${name} shape`);
  t.ok(Buffer.from(actual.bytes()).equals(Buffer.from(expected.bytes())), `${name} bytes`);
}
