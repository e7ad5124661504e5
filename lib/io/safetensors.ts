/**
 * Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes: header length N, little-endian u64][N bytes: UTF-8 JSON header][data region]
 *
 * The header maps tensor names to {dtype, shape, data_offsets: [begin, end]} (offsets relative to the
 * start of the data region) and may hold a "__metadata__" string->string map.
 *
 * Weights files come from the internet, so the parser treats every byte as hostile: each way a file
 * can be malformed is checked before any allocation or typed-array view depends on it, and every
 * failure is a WeightsFormatError naming the file and the problem (never a RangeError, TypeError,
 * SyntaxError or an out-of-memory crash). No allocation can exceed the size of the input.
 *
 * Tensor data is read in host byte order through typed arrays; safetensors is little-endian, so
 * big-endian hosts are not supported (Node.js runs on none of its tier-1 platforms big-endian).
 */
import { promises as fsp } from 'node:fs';
import { readWeightsFile } from './read_file.js';
import { writeFileAtomic } from './temp_file.js';
import { checkPath } from './write_file.js';
import { InvalidArgumentError, WeightsFormatError, describeValue } from '../errors.js';
import { DTYPE_INFO, Tensor, type AnyTypedArray, type DType, type TypedArrayFor } from '../tensor.js';

export interface SafetensorsContents {
  metadata: Record<string, string>;
  tensors: Map<string, Tensor>;
}

/** The same limit as the reference Rust implementation: larger headers are refused unread. */
const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = '__metadata__';

const FROM_SAFETENSORS_DTYPE: Readonly<Record<string, DType>> = {
  F64: 'float64',
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
  I64: 'int64',
  I32: 'int32',
  I16: 'int16',
  I8: 'int8',
  U8: 'uint8',
  BOOL: 'bool',
};

const TO_SAFETENSORS_DTYPE: Readonly<Record<DType, string>> = {
  float64: 'F64',
  float32: 'F32',
  float16: 'F16',
  bfloat16: 'BF16',
  int64: 'I64',
  int32: 'I32',
  int16: 'I16',
  int8: 'I8',
  uint8: 'U8',
  bool: 'BOOL',
};

interface Entry {
  name: string;
  dtype: DType;
  shape: number[];
  count: number;
  begin: number;
  end: number;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function hasOwn(obj: object, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

/** Validates one header entry against the data region length; returns it in typed form. */
function parseEntry(source: string, name: string, raw: unknown, dataLength: number): Entry {
  const where = `tensor ${JSON.stringify(name)}`;
  const fail = (message: string): never => {
    throw new WeightsFormatError(source, `${where}: ${message}`);
  };
  if (!isPlainObject(raw)) return fail(`header entry must be an object, got ${describeValue(raw)}`);
  for (const field of ['dtype', 'shape', 'data_offsets']) {
    if (!hasOwn(raw, field)) fail(`header entry is missing "${field}"`);
  }

  const rawDtype = raw.dtype;
  if (typeof rawDtype !== 'string') return fail(`dtype must be a string, got ${describeValue(rawDtype)}`);
  if (!hasOwn(FROM_SAFETENSORS_DTYPE, rawDtype)) {
    return fail(`dtype ${JSON.stringify(rawDtype)} is not supported (supported: ${Object.keys(FROM_SAFETENSORS_DTYPE).join(', ')})`);
  }
  const dtype = FROM_SAFETENSORS_DTYPE[rawDtype]!;

  const rawShape = raw.shape;
  if (!Array.isArray(rawShape)) return fail(`shape must be an array, got ${describeValue(rawShape)}`);
  let count = 1;
  for (const [i, d] of rawShape.entries()) {
    if (!Number.isSafeInteger(d) || (d as number) < 0) {
      fail(`shape[${i}] must be a non-negative integer, got ${describeValue(d)}`);
    }
    // Checked multiplication, like the reference implementation: refuse before precision is lost.
    count *= d as number;
    if (!Number.isSafeInteger(count)) fail(`shape [${rawShape.join(', ')}] has too many elements`);
  }
  const byteSize = count * DTYPE_INFO[dtype].bytes;
  if (!Number.isSafeInteger(byteSize)) fail(`shape [${rawShape.join(', ')}] has too many bytes`);

  const offsets = raw.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2) {
    return fail(`data_offsets must be an array of two integers, got ${describeValue(offsets)}`);
  }
  const [begin, end] = offsets as unknown[];
  if (!Number.isSafeInteger(begin) || (begin as number) < 0 || !Number.isSafeInteger(end) || (end as number) < 0) {
    return fail(`data_offsets must be two non-negative integers, got [${describeValue(begin)}, ${describeValue(end)}]`);
  }
  const b = begin as number;
  const e = end as number;
  if (b > e) fail(`data_offsets [${b}, ${e}] are reversed`);
  if (e > dataLength) fail(`data_offsets [${b}, ${e}] run past the end of the data region (${dataLength} bytes)`);
  if (e - b !== byteSize) {
    fail(`data_offsets [${b}, ${e}] span ${e - b} bytes but ${rawDtype} shape [${rawShape.join(', ')}] needs ${byteSize}`);
  }
  return { name, dtype, shape: rawShape as number[], count, begin: b, end: e };
}

function parseMetadata(source: string, raw: unknown): Record<string, string> {
  if (!isPlainObject(raw)) {
    throw new WeightsFormatError(source, `__metadata__ must be an object of strings, got ${describeValue(raw)}`);
  }
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value !== 'string') {
      throw new WeightsFormatError(source, `__metadata__[${JSON.stringify(key)}] must be a string, got ${describeValue(value)}`);
    }
  }
  // JSON.parse already made every key (even "__proto__") an own data property; copying through
  // Object.fromEntries keeps it that way.
  return Object.fromEntries(Object.entries(raw as Record<string, string>));
}

/** The header length in the first 8 bytes, checked against the limit and the file's size. */
function readHeaderLength(first8: Uint8Array, fileLength: number, source: string): number {
  if (fileLength < 8) {
    throw new WeightsFormatError(source, `file is ${fileLength} bytes, too short for the 8-byte safetensors header length`);
  }
  const headerLength64 = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (headerLength64 === 0n) throw new WeightsFormatError(source, 'header length is 0');
  if (headerLength64 > BigInt(MAX_HEADER_BYTES)) {
    throw new WeightsFormatError(source, `header length ${headerLength64} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const headerLength = Number(headerLength64);
  if (8 + headerLength > fileLength) {
    throw new WeightsFormatError(source, `header length ${headerLength} runs past the end of the ${fileLength}-byte file`);
  }
  return headerLength;
}

/** Parses and validates the JSON header against a data region of `dataLength` bytes. */
function parseHeader(headerBytes: Uint8Array, dataLength: number, source: string): { metadata: Record<string, string>; entries: Entry[] } {
  let header: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    header = JSON.parse(text);
  } catch (err) {
    // TypeError for bad UTF-8, SyntaxError for bad JSON, RangeError should a V8 limit be hit.
    throw new WeightsFormatError(source, `header is not valid UTF-8 JSON: ${(err as Error).message}`, { cause: err });
  }
  if (!isPlainObject(header)) throw new WeightsFormatError(source, `header must be a JSON object, got ${describeValue(header)}`);

  let metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === METADATA_KEY) metadata = parseMetadata(source, raw);
    else entries.push(parseEntry(source, name, raw, dataLength));
  }

  // Two tensors must not share bytes. Empty tensors occupy none, so they cannot overlap anything.
  const occupied = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < occupied.length; i++) {
    const prev = occupied[i - 1]!;
    const cur = occupied[i]!;
    if (cur.begin < prev.end) {
      throw new WeightsFormatError(
        source,
        `tensors ${JSON.stringify(prev.name)} [${prev.begin}, ${prev.end}] and ${JSON.stringify(cur.name)} [${cur.begin}, ${cur.end}] overlap`,
      );
    }
  }
  return { metadata, entries };
}

/**
 * Parses a complete safetensors file held in memory. Tensors whose data sits at an offset of
 * `bytes.buffer` that is a multiple of their element size are views on that buffer (no copy);
 * the others are copied into fresh arrays.
 */
export function parseSafetensors(bytes: Uint8Array, source: string): SafetensorsContents {
  if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError('bytes', 'a Uint8Array', bytes);
  const headerLength = readHeaderLength(bytes.subarray(0, 8), bytes.byteLength, source);
  const dataStart = 8 + headerLength;
  const { metadata, entries } = parseHeader(bytes.subarray(8, dataStart), bytes.byteLength - dataStart, source);

  const tensors = new Map<string, Tensor>();
  for (const e of entries) {
    const { bytes: size, array: Ctor } = DTYPE_INFO[e.dtype];
    const absolute = bytes.byteOffset + dataStart + e.begin;
    let data: AnyTypedArray;
    if (absolute % size === 0) {
      data = new Ctor(bytes.buffer, absolute, e.count);
    } else {
      // Typed arrays need aligned offsets, so misaligned data is copied into a fresh array.
      data = new Ctor(e.count);
      new Uint8Array(data.buffer).set(bytes.subarray(dataStart + e.begin, dataStart + e.end));
    }
    tensors.set(e.name, new Tensor(e.dtype, e.shape, data as TypedArrayFor<DType>));
  }
  return { metadata, tensors };
}

/**
 * Where one tensor of an open safetensors file lies: its validated dtype, shape and absolute byte
 * offset, not its values. The engine reads it itself, on its loading thread, just before it packs
 * it (native/src/model/deferred_weight.h), so a checkpoint is never resident twice while it loads.
 */
export class SafetensorsRange {
  constructor(
    /** The file's path, for messages. */
    readonly source: string,
    /** The open file's descriptor; valid until the OpenSafetensors it came from is closed. */
    readonly fd: number,
    readonly dtype: DType,
    readonly shape: readonly number[],
    /** Byte offset of the first value from the start of the file. */
    readonly offset: number,
    /** Number of elements. */
    readonly length: number,
  ) {}
}

export interface OpenSafetensors {
  metadata: Record<string, string>;
  tensors: Map<string, SafetensorsRange>;
  /** Closes the file; the ranges must not be read afterwards. */
  close(): Promise<void>;
}

/**
 * Opens a safetensors file and validates its header (every check parseSafetensors makes, against
 * the file's size) without reading any tensor data: only the 8-byte length and the header are read.
 */
export async function openSafetensors(path: string): Promise<OpenSafetensors> {
  checkPath(path);
  const failRead = (err: unknown): never => {
    const code = (err as NodeJS.ErrnoException).code;
    throw new WeightsFormatError(path, `cannot read the file${code ? ` (${code})` : ''}: ${(err as Error).message}`, { cause: err });
  };
  const handle = await fsp.open(path, 'r').catch(failRead);
  try {
    const readAt = async (position: number, length: number): Promise<Uint8Array> => {
      const out = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(out, done, length - done, position + done).catch(failRead);
        if (bytesRead === 0) throw new WeightsFormatError(path, `the file ended at byte ${position + done} while its header was read (was it changed meanwhile?)`);
        done += bytesRead;
      }
      return out;
    };
    const stat = await handle.stat().catch(failRead);
    if (!stat.isFile()) throw new WeightsFormatError(path, 'is not a regular file');
    const fileLength = stat.size;
    const headerLength = readHeaderLength(fileLength >= 8 ? await readAt(0, 8) : new Uint8Array(8), fileLength, path);
    const dataStart = 8 + headerLength;
    const { metadata, entries } = parseHeader(await readAt(8, headerLength), fileLength - dataStart, path);
    const tensors = new Map<string, SafetensorsRange>();
    for (const e of entries) tensors.set(e.name, new SafetensorsRange(path, handle.fd, e.dtype, e.shape, dataStart + e.begin, e.count));
    let closed = false;
    return {
      metadata,
      tensors,
      close: async () => {
        if (closed) return;
        closed = true;
        await handle.close();
      },
    };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** Reads and parses a safetensors file (one read of the whole file). */
export async function readSafetensors(path: string): Promise<SafetensorsContents> {
  checkPath(path);
  return parseSafetensors(await readWeightsFile(path), path);
}

/**
 * Serializes tensors to a safetensors file image: tensors stored contiguously, widest element size
 * first and then by name (as the Rust library orders them, so every tensor lands on a multiple of
 * its element size and reads back as a zero-copy view), the header padded with spaces so the data
 * region starts at an 8-byte aligned offset.
 */
export function serializeSafetensors(tensors: Record<string, Tensor> | Map<string, Tensor>, metadata?: Record<string, string>): Buffer {
  if (!(tensors instanceof Map) && !isPlainObject(tensors)) throw new InvalidArgumentError('tensors', 'a Map or an object of name -> Tensor', tensors);
  if (metadata !== undefined && (!isPlainObject(metadata) || !Object.values(metadata).every((v) => typeof v === 'string'))) {
    throw new InvalidArgumentError('metadata', 'an object of string values (or undefined)', metadata);
  }
  const list = [...(tensors instanceof Map ? tensors.entries() : Object.entries(tensors))];
  for (const [name] of list) if (typeof name !== 'string') throw new InvalidArgumentError('tensors', 'tensor names that are strings', name);
  list.sort(([a, ta], [b, tb]) => {
    const bySize = (tb instanceof Tensor ? DTYPE_INFO[tb.dtype].bytes : 0) - (ta instanceof Tensor ? DTYPE_INFO[ta.dtype].bytes : 0);
    return bySize !== 0 ? bySize : a < b ? -1 : a > b ? 1 : 0;
  });

  // The header is assembled by hand rather than with JSON.stringify of one object so that the key
  // order is exactly the sorted order (objects put integer-like keys first).
  const parts: string[] = [];
  if (metadata !== undefined) {
    parts.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`);
  }
  let offset = 0;
  for (const [name, tensor] of list) {
    if (name === METADATA_KEY) throw new InvalidArgumentError('tensors', `tensor names other than "${METADATA_KEY}"`, name);
    if (!(tensor instanceof Tensor)) throw new InvalidArgumentError(`tensors[${JSON.stringify(name)}]`, 'a Tensor', tensor);
    const end = offset + tensor.byteLength;
    const entry = { dtype: TO_SAFETENSORS_DTYPE[tensor.dtype], shape: tensor.shape, data_offsets: [offset, end] };
    parts.push(`${JSON.stringify(name)}:${JSON.stringify(entry)}`);
    offset = end;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const headerLength = Math.ceil(json.byteLength / 8) * 8;

  const out = Buffer.alloc(8 + headerLength + offset);
  out.writeBigUInt64LE(BigInt(headerLength), 0);
  out.set(json, 8);
  out.fill(0x20, 8 + json.byteLength, 8 + headerLength);
  let at = 8 + headerLength;
  for (const [, tensor] of list) {
    out.set(tensor.bytes(), at);
    at += tensor.byteLength;
  }
  return out;
}

/**
 * Writes a safetensors file atomically: to a temporary file next to `path`, created exclusively
 * under a random name (lib/io/temp_file.ts), then renamed over it.
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, Tensor> | Map<string, Tensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  checkPath(path);
  const bytes = serializeSafetensors(tensors, metadata);
  try {
    await writeFileAtomic(path, bytes);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new WeightsFormatError(path, `cannot write the file${code ? ` (${code})` : ''}: ${(err as Error).message}`, { cause: err });
  }
}
