/**
 * Middlebury `.flo` files (Baker et al., "A Database and Evaluation Methodology for Optical Flow"):
 * the float32 tag 202021.25 ("PIEH" in ASCII), int32 width, int32 height, then height x width pairs
 * (u, v) of float32, row by row, all little-endian. Written by hand: the format is 12 bytes of
 * header and an array, and no maintained npm package reads or writes it.
 */
import { readFile } from 'node:fs/promises';
import { describeValue, InvalidArgumentError, MediaDecodeError } from '../errors.js';
import { checkPath, writeFileChecked } from '../io/write_file.js';

export const FLO_TAG = 202021.25;

/** A flow field: [height, width, 2] float32, (u, v) = (right, down) in pixels. */
export interface FlowField {
  flow: Float32Array;
  width: number;
  height: number;
}

export function checkFlowField(field: unknown, argument: string): FlowField {
  const f = field as Partial<FlowField> | null;
  if (typeof f !== 'object' || f === null || !(f.flow instanceof Float32Array)) throw new InvalidArgumentError(argument, 'a flow field {flow: Float32Array, width, height}', field);
  if (!Number.isSafeInteger(f.width) || f.width! < 1 || !Number.isSafeInteger(f.height) || f.height! < 1) {
    throw new InvalidArgumentError(`${argument}.width`, 'positive integer width and height', `${describeValue(f.width)} x ${describeValue(f.height)}`);
  }
  if (f.flow.length !== f.width! * f.height! * 2) throw new InvalidArgumentError(`${argument}.flow`, `${f.width! * f.height! * 2} values (${f.height} x ${f.width} x 2)`, `${f.flow.length}`);
  return f as FlowField;
}

export function encodeFlo(field: FlowField): Buffer {
  const { flow, width, height } = checkFlowField(field, 'field');
  const out = Buffer.alloc(12 + flow.length * 4);
  out.writeFloatLE(FLO_TAG, 0);
  out.writeInt32LE(width, 4);
  out.writeInt32LE(height, 8);
  for (let i = 0; i < flow.length; i++) out.writeFloatLE(flow[i]!, 12 + i * 4);
  return out;
}

export function decodeFlo(bytes: Uint8Array, source = 'the .flo bytes'): FlowField {
  if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError('bytes', 'a Uint8Array (or Buffer) of a .flo file', bytes);
  if (typeof source !== 'string') throw new InvalidArgumentError('source', 'a string naming where the bytes came from', source);
  // A detached buffer has byteLength 0 (and Buffer.from would throw on it).
  if (bytes.byteLength < 12) throw new MediaDecodeError(source, `it holds ${bytes.byteLength} bytes, fewer than a .flo header's 12`);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.readFloatLE(0) !== FLO_TAG) throw new MediaDecodeError(source, 'it is not a Middlebury .flo file (no PIEH tag)');
  const width = buf.readInt32LE(4);
  const height = buf.readInt32LE(8);
  if (width < 1 || height < 1 || width > 1 << 16 || height > 1 << 16) throw new MediaDecodeError(source, `its size ${width}x${height} is not a valid flow size`);
  const n = width * height * 2;
  if (buf.length !== 12 + n * 4) throw new MediaDecodeError(source, `it holds ${buf.length} bytes where ${width}x${height} flow takes ${12 + n * 4}`);
  const flow = new Float32Array(n);
  for (let i = 0; i < n; i++) flow[i] = buf.readFloatLE(12 + i * 4);
  return { flow, width, height };
}

export async function writeFlo(path: string, field: FlowField): Promise<void> {
  checkPath(path);
  await writeFileChecked(path, encodeFlo(field));
}

export async function readFlo(path: string): Promise<FlowField> {
  checkPath(path);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw new MediaDecodeError(path, `it cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, { cause: error });
  }
  return decodeFlo(bytes, path);
}
