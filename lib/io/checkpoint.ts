/**
 * Loading the weights of a Hugging Face checkpoint folder, preferring safetensors as transformers
 * does: `model.safetensors.index.json` (shards), `model.safetensors`, then PyTorch's
 * `pytorch_model.bin.index.json` (shards) and `pytorch_model.bin`, read by a restricted unpickler
 * that never executes anything (lib/io/pytorch.ts). An index (`{"metadata": {...}, "weight_map":
 * {tensor: shard}}`) is untrusted input like the weights themselves: shard names are confined to
 * the folder and the index is checked against what the shards actually hold.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError, WeightsFormatError, describeValue } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { readPytorchCheckpoint } from './pytorch.js';
import { openSafetensors, readSafetensors, type SafetensorsRange } from './safetensors.js';

type ShardReader<T> = (path: string) => Promise<Map<string, T>>;

const readSafetensorsTensors: ShardReader<Tensor> = async (path) => (await readSafetensors(path)).tensors;

/** The layouts a folder may have, in the order transformers prefers them. */
const LAYOUTS = [
  { index: 'model.safetensors.index.json', single: 'model.safetensors', safetensors: true },
  { index: 'pytorch_model.bin.index.json', single: 'pytorch_model.bin', safetensors: false },
] as const;

export interface CheckpointWeights {
  tensors: Map<string, Tensor>;
  /** Paths of the weight files that were read, in the order they were read. */
  files: string[];
}

/** A checkpoint whose safetensors files are open, their tensors located but not read (openCheckpointWeights). */
export interface OpenCheckpointWeights {
  tensors: Map<string, Tensor | SafetensorsRange>;
  /** Paths of the weight files, in the order they were opened or read. */
  files: string[];
  /** Closes the open files; their ranges must not be read afterwards. */
  close(): Promise<void>;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads a file as text, or returns undefined when it does not exist. */
async function readOptionalText(path: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new WeightsFormatError(path, `cannot read the file${code ? ` (${code})` : ''}: ${(err as Error).message}`, { cause: err });
  }
}

/** False only when nothing is at `path`; other stat failures (EACCES...) are left for the read to report. */
async function exists(path: string): Promise<boolean> {
  try {
    await fsp.stat(path);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/**
 * A shard must be a plain file name: no separators of either platform (which also rules out
 * absolute paths), no drive or stream colon, no "." or "..", so an index cannot reach outside `dir`.
 */
function isPlainFileName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !/[/\\:\0]/.test(name);
}

/** Parses and validates the index; returns the weight map as tensor name -> shard file name. */
function parseIndex(indexPath: string, text: string): Map<string, string> {
  let index: unknown;
  try {
    index = JSON.parse(text);
  } catch (err) {
    throw new WeightsFormatError(indexPath, `not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (!isPlainObject(index)) throw new WeightsFormatError(indexPath, `must be a JSON object, got ${describeValue(index)}`);
  const weightMap = index.weight_map;
  if (!isPlainObject(weightMap)) {
    throw new WeightsFormatError(indexPath, `"weight_map" must be an object mapping tensor names to shard files, got ${describeValue(weightMap)}`);
  }
  const result = new Map<string, string>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string') {
      throw new WeightsFormatError(indexPath, `weight_map[${JSON.stringify(tensor)}] must be a shard file name, got ${describeValue(shard)}`);
    }
    if (!isPlainFileName(shard)) {
      throw new WeightsFormatError(
        indexPath,
        `weight_map[${JSON.stringify(tensor)}] names shard ${JSON.stringify(shard)}, which is not a plain file name inside the checkpoint folder`,
      );
    }
    result.set(tensor, shard);
  }
  if (result.size === 0) throw new WeightsFormatError(indexPath, '"weight_map" lists no tensors');
  return result;
}

async function loadSharded<T>(dir: string, indexPath: string, text: string, read: ShardReader<T>): Promise<{ tensors: Map<string, T>; files: string[] }> {
  const weightMap = parseIndex(indexPath, text);
  const tensors = new Map<string, T>();
  const shardOf = new Map<string, string>();
  const files: string[] = [];
  // Each shard is read once, in order of first mention in the index.
  for (const shard of new Set(weightMap.values())) {
    const path = join(dir, shard);
    files.push(path);
    for (const [name, tensor] of await read(path)) {
      const previous = shardOf.get(name);
      if (previous !== undefined) {
        throw new WeightsFormatError(path, `tensor ${JSON.stringify(name)} is also stored in shard ${JSON.stringify(previous)}`);
      }
      shardOf.set(name, shard);
      tensors.set(name, tensor);
    }
  }
  for (const [name, shard] of weightMap) {
    if (shardOf.get(name) !== shard) {
      throw new WeightsFormatError(indexPath, `tensor ${JSON.stringify(name)} is listed in shard ${JSON.stringify(shard)}, which does not contain it`);
    }
  }
  return { tensors, files };
}

async function checkFolder(dir: string): Promise<void> {
  const stat = await fsp.stat(dir).catch(() => undefined);
  if (!stat?.isDirectory()) {
    throw new InvalidArgumentError('model', 'a checkpoint folder containing config.json and model.safetensors (or pytorch_model.bin)', dir);
  }
}

/** Reads the weights of the first layout present in `dir` with `reader(layout)`. */
async function loadLayout<T>(dir: string, reader: (layout: (typeof LAYOUTS)[number]) => ShardReader<T>): Promise<{ tensors: Map<string, T>; files: string[] }> {
  for (const layout of LAYOUTS) {
    const indexPath = join(dir, layout.index);
    const indexText = await readOptionalText(indexPath);
    if (indexText !== undefined) return loadSharded(dir, indexPath, indexText, reader(layout));
    const single = join(dir, layout.single);
    if (await exists(single)) return { tensors: await reader(layout)(single), files: [single] };
  }
  throw new WeightsFormatError(dir, `no weights in this folder: expected ${LAYOUTS.flatMap((l) => [l.single, l.index]).join(', ')}`);
}

/** Loads every tensor of the checkpoint in `dir` (safetensors or pytorch_model.bin, sharded or not). */
export async function loadCheckpointWeights(dir: string): Promise<CheckpointWeights> {
  await checkFolder(dir);
  return loadLayout<Tensor>(dir, (layout) => (layout.safetensors ? readSafetensorsTensors : readPytorchCheckpoint));
}

/**
 * Opens the checkpoint in `dir` for the engine to read while it loads: safetensors files are
 * opened and their headers validated, their tensors returned as SafetensorsRanges (no data read),
 * so the weights are never resident in JavaScript memory; pytorch_model.bin files are read whole
 * (a pickle's tensors are located only by unpickling it; lib/io/pytorch.ts). Close the result
 * once the model is loaded.
 */
export async function openCheckpointWeights(dir: string): Promise<OpenCheckpointWeights> {
  await checkFolder(dir);
  const opened: { close(): Promise<void> }[] = [];
  const close = async (): Promise<void> => {
    await Promise.all(opened.splice(0).map((file) => file.close()));
  };
  const openShard: ShardReader<SafetensorsRange> = async (path) => {
    const file = await openSafetensors(path);
    opened.push(file);
    return file.tensors;
  };
  try {
    const { tensors, files } = await loadLayout<Tensor | SafetensorsRange>(dir, (layout) => (layout.safetensors ? openShard : readPytorchCheckpoint));
    return { tensors, files, close };
  } catch (err) {
    await close();
    throw err;
  }
}
