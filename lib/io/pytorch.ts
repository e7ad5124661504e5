/**
 * Reading PyTorch checkpoints (`pytorch_model.bin`, written by `torch.save(model.state_dict())`)
 * without executing them.
 *
 * A .bin file is a pickle, and unpickling with Python runs whatever callables the file names. This
 * module instead interprets the pickle with a small, closed set of opcodes and an allow-list of
 * globals that map to local pure functions, so a hostile file can at worst be refused
 * (UnsafePickleError) or rejected as malformed (WeightsFormatError). Two containers exist:
 *
 * - the zip format (torch >= 1.6, the default): `<archive>/data.pkl` holds the pickle, whose
 *   persistent ids `('storage', torch.FloatStorage, '<key>', 'cpu', numel)` name raw little-endian
 *   storages in `<archive>/data/<key>`;
 * - the legacy format (`_use_new_zipfile_serialization=False`): five pickles in a row (magic number,
 *   protocol version 1001, sys_info, the state dict whose persistent ids carry a sixth element
 *   `view_metadata`, the list of storage keys), then for each key an int64 element count and the
 *   raw bytes.
 *
 * As in lib/io/safetensors.ts every byte is treated as hostile: each length, offset, index and
 * size is checked before anything depends on it, and every failure is a WeightsFormatError naming
 * the file (never a RangeError, TypeError, hang or out-of-memory). Allocations are bounded by the
 * input: stack and memo have fixed limits, STORED zip storages are views on the input, a DEFLATE
 * storage is inflated only when its zip entry declares exactly the size the pickle gives the
 * storage (checked for every storage before the first is inflated), into one allocation of that
 * size that zlib may not exceed, data.pkl is capped at MAX_PICKLE_BYTES, and copies
 * made for non-contiguous tensors share a budget (COPY_BUDGET_FLOOR_BYTES or the storages' total).
 *
 * Choices: trailing bytes after the data.pkl STOP, after the last legacy storage or after the zip's
 * end record are refused (torch writes none); only little-endian checkpoints are read; only the
 * globals torch.save writes for a plain state dict are allowed (no tensor subclasses, quantized
 * tensors, numpy arrays, UntypedStorage or dtype objects).
 */
import { readWeightsFile } from './read_file.js';
import * as zlib from 'node:zlib';
import { InvalidArgumentError, PerceiverError, UnsafePickleError, WeightsFormatError } from '../errors.js';
import { DTYPE_INFO, Tensor, type AnyTypedArray, type DType, type TypedArrayFor } from '../tensor.js';

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

/** Items on the unpickler's stack at once. A state dict needs a few dozen. */
const MAX_STACK_ITEMS = 100_000;
/** Memo entries. torch writes about four per tensor; 100k allows ~25k tensors per file. */
const MAX_MEMO_ENTRIES = 100_000;
/** Open MARKs at once (nesting depth of tuples/lists/dicts being built). torch uses 3. */
const MAX_MARK_DEPTH = 1_000;
/** LONG1 integers wider than this are refused; torch's widest is the 10-byte legacy magic number. */
const MAX_LONG1_BYTES = 16;
/** A GLOBAL's module or name line longer than this is refused unread. */
const MAX_GLOBAL_LINE_BYTES = 1_000;
/** torch's own limit on tensor dimensions. */
const MAX_RANK = 64;
/** Central-directory entries in a zip. A checkpoint has one per storage plus five. */
const MAX_ZIP_ENTRIES = 1_000_000;
/** DEFLATE cannot expand data more than 1032:1; larger declared sizes are lies (or bombs). */
const MAX_DEFLATE_RATIO = 1032;
/**
 * A data.pkl larger than this is refused before it is read (or inflated): torch writes a few
 * hundred bytes per tensor, and MAX_MEMO_ENTRIES already stops a pickle of more than ~25k tensors.
 */
const MAX_PICKLE_BYTES = 64 * 1024 * 1024;
/** The byteorder record holds "little" or "big". */
const MAX_BYTEORDER_BYTES = 16;
/** Non-contiguous tensors are copied; together they may take this much or the storages' total size. */
const COPY_BUDGET_FLOOR_BYTES = 64 * 1024 * 1024;

/** The first pickle of a legacy file: torch.serialization.MAGIC_NUMBER. */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL_VERSION = 1001;

const utf8 = new TextDecoder('utf-8', { fatal: true });

// ---------------------------------------------------------------------------------------------
// CRC-32
// ---------------------------------------------------------------------------------------------

let crcTable: Uint32Array | undefined;

/** CRC-32 (ISO-HDLC, as zip uses): zlib.crc32 where Node has it (>= 20.15), else a table version. */
function crc32(data: Uint8Array): number {
  if (typeof zlib.crc32 === 'function') return zlib.crc32(data) >>> 0;
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = crcTable[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// A strict zip reader
//
// Written here rather than taken from a package because a checkpoint is a hostile archive: every
// offset and size in the end record, the central directory and each local header must be checked
// against the buffer before it is used, which general-purpose readers do not promise, and torch
// only ever needs STORED (plus DEFLATE for archives re-packed by other tools). ZIP64 is read
// because torch always writes a ZIP64 end record, and per-entry ZIP64 sizes for large storages.
// ---------------------------------------------------------------------------------------------

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const EOCD_SIZE = 22;
/** The end record plus the longest possible comment. */
const EOCD_SEARCH_BYTES = EOCD_SIZE + 0xffff;
const METHOD_STORED = 0;
const METHOD_DEFLATE = 8;

interface ZipEntry {
  name: string;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localOffset: number;
  /** Where the entry's (compressed) data starts; set from the local header. */
  dataStart: number;
}

/** Little-endian field access with bounds checked against the buffer. */
class ByteReader {
  private readonly view: DataView;
  constructor(
    readonly bytes: Uint8Array,
    private readonly source: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private check(at: number, n: number, what: string): void {
    if (!(at >= 0 && at + n <= this.bytes.byteLength)) {
      throw new WeightsFormatError(this.source, `${what} at byte ${at} runs past the end of the ${this.bytes.byteLength}-byte file`);
    }
  }

  u16(at: number, what: string): number {
    this.check(at, 2, what);
    return this.view.getUint16(at, true);
  }

  u32(at: number, what: string): number {
    this.check(at, 4, what);
    return this.view.getUint32(at, true);
  }

  /** An unsigned 64-bit field, refused when above 2^53 (no file can be that large). */
  u64(at: number, what: string): number {
    this.check(at, 8, what);
    const v = this.view.getBigUint64(at, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new WeightsFormatError(this.source, `${what} ${v} is absurdly large`);
    return Number(v);
  }

  slice(at: number, n: number, what: string): Uint8Array {
    this.check(at, n, what);
    return this.bytes.subarray(at, at + n);
  }
}

/** Locates the central directory: [offset, size, entry count], through the ZIP64 end record when present. */
function readEndOfCentralDirectory(r: ByteReader, source: string): { cdOffset: number; cdSize: number; count: number } {
  const len = r.bytes.byteLength;
  // Search backwards for an end record whose comment reaches exactly the end of the file, which
  // also keeps a signature inside the comment from being mistaken for the record.
  let eocd = -1;
  for (let p = len - EOCD_SIZE; p >= Math.max(0, len - EOCD_SEARCH_BYTES); p--) {
    if (r.bytes[p] === 0x50 && r.u32(p, 'end record') === SIG_EOCD && p + EOCD_SIZE + r.u16(p + 20, 'comment length') === len) {
      eocd = p;
      break;
    }
  }
  if (eocd < 0) throw new WeightsFormatError(source, 'zip archive has no end-of-central-directory record (truncated, or bytes appended after it)');

  const disk = r.u16(eocd + 4, 'disk number');
  const cdDisk = r.u16(eocd + 6, 'central directory disk');
  let onDisk = r.u16(eocd + 8, 'entry count');
  let count = r.u16(eocd + 10, 'entry count');
  let cdSize = r.u32(eocd + 12, 'central directory size');
  let cdOffset = r.u32(eocd + 16, 'central directory offset');
  if (disk !== 0 || cdDisk !== 0) throw new WeightsFormatError(source, 'multi-disk zip archives are not supported');
  let cdLimit = eocd;

  const locator = eocd - 20;
  if (locator >= 0 && r.u32(locator, 'zip64 locator') === SIG_ZIP64_LOCATOR) {
    if (r.u32(locator + 4, 'zip64 disk') !== 0 || r.u32(locator + 16, 'zip64 disk count') > 1) {
      throw new WeightsFormatError(source, 'multi-disk zip archives are not supported');
    }
    const at = r.u64(locator + 8, 'zip64 end record offset');
    if (at + 56 > locator) throw new WeightsFormatError(source, `zip64 end record offset ${at} is not before its locator at ${locator}`);
    if (r.u32(at, 'zip64 end record') !== SIG_ZIP64_EOCD) throw new WeightsFormatError(source, `no zip64 end record at byte ${at}`);
    if (r.u32(at + 16, 'zip64 disk number') !== 0 || r.u32(at + 20, 'zip64 central directory disk') !== 0) {
      throw new WeightsFormatError(source, 'multi-disk zip archives are not supported');
    }
    const z = {
      onDisk: r.u64(at + 24, 'zip64 entry count'),
      count: r.u64(at + 32, 'zip64 entry count'),
      cdSize: r.u64(at + 40, 'zip64 central directory size'),
      cdOffset: r.u64(at + 48, 'zip64 central directory offset'),
    };
    // Where the 32-bit record holds a real value (not the 0xFFFF... "see zip64" marker) the two must agree.
    const agree = (v32: number, marker: number, v64: number) => v32 === marker || v32 === v64;
    if (!agree(onDisk, 0xffff, z.onDisk) || !agree(count, 0xffff, z.count) || !agree(cdSize, 0xffffffff, z.cdSize) || !agree(cdOffset, 0xffffffff, z.cdOffset)) {
      throw new WeightsFormatError(source, 'the zip and zip64 end records disagree');
    }
    ({ onDisk, count, cdSize, cdOffset } = z);
    cdLimit = at;
  }
  if (onDisk !== count) throw new WeightsFormatError(source, 'multi-disk zip archives are not supported');
  if (cdOffset + cdSize > cdLimit) {
    throw new WeightsFormatError(source, `central directory [${cdOffset}, ${cdOffset + cdSize}) runs past its end record at byte ${cdLimit}`);
  }
  if (count > MAX_ZIP_ENTRIES || count * 46 > cdSize) {
    throw new WeightsFormatError(source, `zip archive claims ${count} entries, which its ${cdSize}-byte central directory cannot hold`);
  }
  return { cdOffset, cdSize, count };
}

/** Parses and checks the whole directory (central entries and each local header). */
function readZipDirectory(bytes: Uint8Array, source: string): Map<string, ZipEntry> {
  const r = new ByteReader(bytes, source);
  const { cdOffset, cdSize, count } = readEndOfCentralDirectory(r, source);
  const cdEnd = cdOffset + cdSize;
  const entries = new Map<string, ZipEntry>();
  const rawNames = new Map<ZipEntry, Uint8Array>();

  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdEnd || r.u32(p, 'central directory entry') !== SIG_CENTRAL) {
      throw new WeightsFormatError(source, `central directory entry ${i} at byte ${p} is missing or corrupt`);
    }
    const flags = r.u16(p + 8, 'flags');
    const method = r.u16(p + 10, 'method');
    const crc = r.u32(p + 16, 'crc');
    let compressedSize = r.u32(p + 20, 'compressed size');
    let size = r.u32(p + 24, 'size');
    const nameLength = r.u16(p + 28, 'name length');
    const extraLength = r.u16(p + 30, 'extra length');
    const commentLength = r.u16(p + 32, 'comment length');
    let disk = r.u16(p + 34, 'disk');
    let localOffset = r.u32(p + 42, 'local header offset');
    const next = p + 46 + nameLength + extraLength + commentLength;
    if (next > cdEnd) throw new WeightsFormatError(source, `central directory entry ${i} runs past the central directory`);
    const rawName = r.slice(p + 46, nameLength, 'entry name');
    let name: string;
    try {
      name = utf8.decode(rawName);
    } catch {
      throw new WeightsFormatError(source, `central directory entry ${i} has a name that is not UTF-8`);
    }
    const where = `zip entry ${JSON.stringify(name)}`;

    // ZIP64 extended information: 8-byte values for exactly the fields whose 32-bit value is the marker.
    for (let e = p + 46 + nameLength, end = e + extraLength; e < end; ) {
      if (e + 4 > end) throw new WeightsFormatError(source, `${where}: truncated extra field`);
      const id = r.u16(e, 'extra id');
      const n = r.u16(e + 2, 'extra length');
      if (e + 4 + n > end) throw new WeightsFormatError(source, `${where}: extra field runs past its entry`);
      if (id === 0x0001) {
        let q = e + 4;
        const take = (): number => {
          if (q + 8 > e + 4 + n) throw new WeightsFormatError(source, `${where}: zip64 extra field is too short`);
          const v = r.u64(q, `${where} zip64 field`);
          q += 8;
          return v;
        };
        if (size === 0xffffffff) size = take();
        if (compressedSize === 0xffffffff) compressedSize = take();
        if (localOffset === 0xffffffff) localOffset = take();
        if (disk === 0xffff) {
          if (q + 4 > e + 4 + n) throw new WeightsFormatError(source, `${where}: zip64 extra field is too short`);
          disk = r.u32(q, 'zip64 disk');
        }
      }
      e += 4 + n;
    }

    if (flags & 0x41) throw new WeightsFormatError(source, `${where} is encrypted`);
    if (disk !== 0) throw new WeightsFormatError(source, `${where} is on another disk`);
    if (method !== METHOD_STORED && method !== METHOD_DEFLATE) {
      throw new WeightsFormatError(source, `${where} uses compression method ${method} (only 0 STORED and 8 DEFLATE are supported)`);
    }
    if (method === METHOD_STORED && compressedSize !== size) {
      throw new WeightsFormatError(source, `${where} is STORED but declares ${compressedSize} stored and ${size} uncompressed bytes`);
    }
    if (method === METHOD_DEFLATE && size > compressedSize * MAX_DEFLATE_RATIO + 64) {
      throw new WeightsFormatError(source, `${where} declares ${size} bytes from ${compressedSize} compressed ones, beyond what DEFLATE can produce`);
    }
    if (compressedSize > cdOffset || localOffset > cdOffset - compressedSize) {
      throw new WeightsFormatError(source, `${where}: ${compressedSize} bytes at offset ${localOffset} run past the start of the central directory (byte ${cdOffset})`);
    }
    if (entries.has(name)) throw new WeightsFormatError(source, `zip archive holds ${JSON.stringify(name)} twice`);
    const entry: ZipEntry = { name, method, crc, compressedSize, size, localOffset, dataStart: -1 };
    entries.set(name, entry);
    rawNames.set(entry, rawName);
    p = next;
  }

  // Local headers: each must agree with its central entry, and entries' data must not overlap.
  for (const entry of entries.values()) {
    const at = entry.localOffset;
    const where = `zip entry ${JSON.stringify(entry.name)}`;
    if (at + 30 > cdOffset || r.u32(at, 'local header') !== SIG_LOCAL) {
      throw new WeightsFormatError(source, `${where}: no local header at byte ${at}`);
    }
    if (r.u16(at + 6, 'local flags') & 0x41) throw new WeightsFormatError(source, `${where} is encrypted`);
    if (r.u16(at + 8, 'local method') !== entry.method) throw new WeightsFormatError(source, `${where}: local and central headers disagree on the method`);
    const nameLength = r.u16(at + 26, 'local name length');
    const extraLength = r.u16(at + 28, 'local extra length');
    const localName = r.slice(at + 30, nameLength, 'local name');
    if (!Buffer.from(localName.buffer, localName.byteOffset, localName.byteLength).equals(rawNames.get(entry)!)) {
      throw new WeightsFormatError(source, `${where}: local header names another file`);
    }
    entry.dataStart = at + 30 + nameLength + extraLength;
    if (entry.dataStart + entry.compressedSize > cdOffset) {
      throw new WeightsFormatError(source, `${where}: data runs past the start of the central directory`);
    }
  }
  const byOffset = [...entries.values()].sort((a, b) => a.localOffset - b.localOffset);
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1]!;
    if (prev.dataStart + prev.compressedSize > byOffset[i]!.localOffset) {
      throw new WeightsFormatError(source, `zip entries ${JSON.stringify(prev.name)} and ${JSON.stringify(byOffset[i]!.name)} overlap`);
    }
  }
  return entries;
}

/**
 * An entry's uncompressed bytes (a view on `bytes` when STORED), CRC-checked. Callers check
 * `entry.size` against what they expect before calling, so nothing is allocated for a size the
 * caller did not agree to.
 */
function readZipEntry(bytes: Uint8Array, source: string, entry: ZipEntry): Uint8Array {
  const raw = bytes.subarray(entry.dataStart, entry.dataStart + entry.compressedSize);
  let data: Uint8Array = raw;
  if (entry.method === METHOD_DEFLATE) {
    try {
      // maxOutputLength makes zlib stop (with an error) rather than inflate past the declared size;
      // one output chunk one byte larger than that size makes the declared size the only
      // allocation (zlib's default 16 KiB chunks would be joined into a second copy at the end).
      data = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.size), chunkSize: Math.max(zlib.constants.Z_MIN_CHUNK, entry.size + 1) });
    } catch (err) {
      throw new WeightsFormatError(source, `zip entry ${JSON.stringify(entry.name)} does not inflate to its declared ${entry.size} bytes: ${(err as Error).message}`, { cause: err });
    }
    if (data.byteLength !== entry.size) {
      throw new WeightsFormatError(source, `zip entry ${JSON.stringify(entry.name)} inflates to ${data.byteLength} bytes, not the declared ${entry.size}`);
    }
  }
  const actual = crc32(data);
  if (actual !== entry.crc) {
    throw new WeightsFormatError(
      source,
      `zip entry ${JSON.stringify(entry.name)} fails its CRC-32 check (stored ${hex32(entry.crc)}, computed ${hex32(actual)}): the file is corrupt`,
    );
  }
  return data;
}

function hex32(v: number): string {
  return `0x${v.toString(16).padStart(8, '0')}`;
}

// ---------------------------------------------------------------------------------------------
// Pickle values
// ---------------------------------------------------------------------------------------------

/** Python float (kept apart from int so an int argument can be checked as one). */
class PyFloat {
  constructor(readonly value: number) {}
}
class PyTuple {
  constructor(readonly items: readonly PyValue[]) {}
}
class PyList {
  readonly items: PyValue[] = [];
}
/** dict and collections.OrderedDict (both keep insertion order). Keys are restricted to scalars. */
class PyDict {
  readonly map = new Map<DictKey, PyValue>();
}

type Callable = 'OrderedDict' | 'rebuild_tensor_v2' | 'rebuild_tensor' | 'rebuild_parameter';
/** An allowed global that REDUCE may call: resolved to a local pure function, never imported. */
class PyCallable {
  constructor(
    readonly qualname: string,
    readonly kind: Callable,
  ) {}
}
/** torch.FloatStorage etc.: only ever a tag naming the dtype of a persistent storage. */
class StorageType {
  constructor(
    readonly qualname: string,
    readonly dtype: DType,
  ) {}
}

/** One storage of the file (a zip entry, or a block of the legacy file). */
interface RootStorage {
  key: string;
  dtype: DType;
  numel: number;
  /** Filled once the storage's bytes are located. */
  data?: AnyTypedArray;
}
/** A storage as the pickle sees it: a root, or (legacy view_metadata) a slice of one. */
class StorageRef {
  constructor(
    readonly root: RootStorage,
    readonly offset: number,
    readonly numel: number,
  ) {}
}
class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly size: readonly number[],
    readonly stride: readonly number[],
    readonly numel: number,
  ) {}
}

type DictKey = string | number | bigint | boolean | null;
type PyValue = DictKey | PyFloat | Uint8Array | PyTuple | PyList | PyDict | PyCallable | StorageType | StorageRef | TensorRef;

const STORAGE_TYPES: Readonly<Record<string, DType>> = {
  FloatStorage: 'float32',
  DoubleStorage: 'float64',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
};

/** The only globals a pickle may name. A Map, so names like "__proto__" cannot reach Object's prototype. */
const ALLOWED_GLOBALS = new Map<string, PyCallable | StorageType>([
  ['collections.OrderedDict', new PyCallable('collections.OrderedDict', 'OrderedDict')],
  ['torch._utils._rebuild_tensor_v2', new PyCallable('torch._utils._rebuild_tensor_v2', 'rebuild_tensor_v2')],
  ['torch._utils._rebuild_tensor', new PyCallable('torch._utils._rebuild_tensor', 'rebuild_tensor')],
  ['torch._utils._rebuild_parameter', new PyCallable('torch._utils._rebuild_parameter', 'rebuild_parameter')],
  ...Object.entries(STORAGE_TYPES).map(([name, dtype]): [string, StorageType] => [`torch.${name}`, new StorageType(`torch.${name}`, dtype)]),
]);

function typeName(v: PyValue): string {
  if (v === null) return 'None';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number' || typeof v === 'bigint') return 'int';
  if (typeof v === 'string') return 'str';
  if (v instanceof PyFloat) return 'float';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof PyTuple) return `tuple of ${v.items.length}`;
  if (v instanceof PyList) return 'list';
  if (v instanceof PyDict) return 'dict';
  if (v instanceof PyCallable || v instanceof StorageType) return v.qualname;
  if (v instanceof StorageRef) return 'storage';
  return 'tensor';
}

/** A refused name as it will appear in the error: printable ASCII as is, anything else quoted and cut. */
function printable(s: string): string {
  return /^[\x20-\x7e]{1,200}$/.test(s) ? s : JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}...` : s);
}

// ---------------------------------------------------------------------------------------------
// The restricted unpickler
// ---------------------------------------------------------------------------------------------

/** Opcodes that exist in pickle but are never needed for a state dict: refused by name. */
const REFUSED_OPCODES: Readonly<Record<number, string>> = {
  0x30: 'POP',
  0x31: 'POP_MARK',
  0x32: 'DUP',
  0x46: 'FLOAT',
  0x49: 'INT',
  0x4c: 'LONG',
  0x50: 'PERSID',
  0x53: 'STRING',
  0x54: 'BINSTRING',
  0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE',
  0x64: 'DICT',
  0x67: 'GET',
  0x69: 'INST',
  0x6c: 'LIST',
  0x6f: 'OBJ',
  0x70: 'PUT',
  0x81: 'NEWOBJ',
  0x82: 'EXT1',
  0x83: 'EXT2',
  0x84: 'EXT4',
  0x8b: 'LONG4',
  0x8e: 'BINBYTES8',
  0x8f: 'EMPTY_SET',
  0x90: 'ADDITEMS',
  0x91: 'FROZENSET',
  0x92: 'NEWOBJ_EX',
  0x96: 'BYTEARRAY8',
  0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

interface UnpickleOptions {
  /** Names the pickle in messages, e.g. "data.pkl" or "legacy pickle 4". */
  label: string;
  /** Resolves BINPERSID ids; absent where the pickle must not hold any. */
  persistentLoad?: (pid: PyValue) => PyValue;
  /** Rebuilds tensors for REDUCE of the torch._utils functions. */
  rebuildTensor?: (storage: PyValue, offset: PyValue, size: PyValue, stride: PyValue) => TensorRef;
}

/**
 * Interprets one pickle starting at `start`; returns the value STOP leaves and the offset after
 * STOP. Runs in time linear in the pickle's length: no opcode loops, and nothing ever walks the
 * values built (so self-referencing or deeply nested values are harmless).
 */
function unpickle(bytes: Uint8Array, start: number, source: string, options: UnpickleOptions): { value: PyValue; end: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stack: PyValue[] = [];
  /** Stack lengths at each open MARK; items below the top mark are out of reach, as in CPython. */
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  let pos = start;
  let opAt = start;
  let opName = '';

  const fail = (message: string): never => {
    throw new WeightsFormatError(source, `${options.label}: ${opName ? `${opName} at byte ${opAt - start}: ` : ''}${message}`);
  };
  const need = (n: number): number => {
    if (n > bytes.byteLength - pos) fail(`needs ${n} bytes but the pickle has ${bytes.byteLength - pos} left (truncated?)`);
    const at = pos;
    pos += n;
    return at;
  };
  const push = (v: PyValue): void => {
    if (stack.length >= MAX_STACK_ITEMS) fail(`more than ${MAX_STACK_ITEMS} items on the stack`);
    stack.push(v);
  };
  const floor = (): number => (marks.length ? marks[marks.length - 1]! : 0);
  const pop = (): PyValue => {
    if (stack.length <= floor()) fail('stack underflow');
    return stack.pop()!;
  };
  const top = (): PyValue => {
    if (stack.length <= floor()) fail('stack underflow');
    return stack[stack.length - 1]!;
  };
  const popMark = (): PyValue[] => {
    if (!marks.length) fail('no MARK to pop to');
    return stack.splice(marks.pop()!);
  };
  const memoPut = (index: number): void => {
    if (!memo.has(index) && memo.size >= MAX_MEMO_ENTRIES) fail(`more than ${MAX_MEMO_ENTRIES} memo entries`);
    memo.set(index, top());
  };
  const memoGet = (index: number): void => {
    if (!memo.has(index)) fail(`memo entry ${index} was never stored`);
    push(memo.get(index)!);
  };
  const text = (n: number): string => {
    const at = need(n);
    try {
      return utf8.decode(bytes.subarray(at, at + n));
    } catch {
      return fail('string is not valid UTF-8');
    }
  };
  const line = (): string => {
    const limit = Math.min(bytes.byteLength, pos + MAX_GLOBAL_LINE_BYTES + 1);
    let end = pos;
    while (end < limit && bytes[end] !== 0x0a) end++;
    if (end === bytes.byteLength) fail('the pickle ends inside a global name (truncated?)');
    if (end === limit) fail(`global name longer than ${MAX_GLOBAL_LINE_BYTES} bytes`);
    const s = text(end - pos);
    pos++;
    return s;
  };
  /** Allow-list lookup, done where the global is named: a refused one stops everything right here. */
  const resolveGlobal = (module: string, name: string): PyCallable | StorageType => {
    const qualname = `${module}.${name}`;
    const found = ALLOWED_GLOBALS.get(qualname);
    if (!found) throw new UnsafePickleError(source, printable(qualname));
    return found;
  };
  const setItem = (dict: PyValue, key: PyValue, value: PyValue): void => {
    if (!(dict instanceof PyDict)) fail(`target is ${typeName(dict)}, not a dict`);
    if (!(key === null || typeof key === 'string' || typeof key === 'number' || typeof key === 'bigint' || typeof key === 'boolean')) {
      fail(`dict key of type ${typeName(key)} is not supported`);
    }
    (dict as PyDict).map.set(key as DictKey, value);
  };
  const append = (list: PyValue, value: PyValue): void => {
    if (!(list instanceof PyList)) fail(`target is ${typeName(list)}, not a list`);
    (list as PyList).items.push(value);
  };
  const call = (fn: PyValue, args: PyValue): PyValue => {
    if (!(fn instanceof PyCallable)) return fail(`${typeName(fn)} cannot be called`);
    if (!(args instanceof PyTuple)) return fail(`arguments to ${fn.qualname} must be a tuple, got ${typeName(args)}`);
    const a = args.items;
    const arity = (ok: boolean): void => {
      if (!ok) fail(`${fn.qualname} called with ${a.length} arguments`);
    };
    switch (fn.kind) {
      case 'OrderedDict':
        arity(a.length === 0);
        return new PyDict();
      case 'rebuild_tensor_v2':
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]):
        // requires_grad, hooks (an OrderedDict that is empty in any state dict) and the python-side
        // metadata do not affect the values, but must at least have their types.
        arity(a.length === 6 || a.length === 7);
        if (typeof a[4] !== 'boolean') fail(`requires_grad must be a bool, got ${typeName(a[4]!)}`);
        if (!(a[5] instanceof PyDict)) fail(`backward_hooks must be a dict, got ${typeName(a[5]!)}`);
        return rebuild(a);
      case 'rebuild_tensor':
        arity(a.length === 4);
        return rebuild(a);
      case 'rebuild_parameter':
        // (data, requires_grad, backward_hooks): a Parameter holds exactly its data's values.
        arity(a.length === 3);
        if (!(a[0] instanceof TensorRef)) fail(`parameter data must be a tensor, got ${typeName(a[0]!)}`);
        return a[0]!;
    }
  };
  const rebuild = (a: readonly PyValue[]): TensorRef => {
    if (!options.rebuildTensor) return fail('tensors are not expected in this pickle');
    return options.rebuildTensor(a[0]!, a[1]!, a[2]!, a[3]!);
  };

  for (;;) {
    opAt = pos;
    opName = '';
    if (pos >= bytes.byteLength) fail('the pickle ends before its STOP opcode (truncated?)');
    const op = bytes[pos++]!;
    if (opAt === start && op !== 0x80) fail('not a pickle of protocol 2 or later (no PROTO opcode)');
    switch (op) {
      case 0x80: {
        opName = 'PROTO';
        const proto = bytes[need(1)]!;
        if (opAt !== start) fail('PROTO must come first');
        if (proto < 2 || proto > 5) fail(`pickle protocol ${proto} is not supported (2 to 5)`);
        break;
      }
      case 0x95: {
        opName = 'FRAME';
        // Framing only groups opcodes for buffered reading; the whole pickle is in memory already.
        const n = view.getBigUint64(need(8), true);
        if (n > BigInt(bytes.byteLength - pos)) fail(`frame of ${n} bytes runs past the end of the data`);
        break;
      }
      case 0x2e: {
        opName = 'STOP';
        if (marks.length || stack.length !== 1) fail(`STOP with ${stack.length} items on the stack and ${marks.length} open MARKs`);
        return { value: stack[0]!, end: pos };
      }
      case 0x28:
        opName = 'MARK';
        if (marks.length >= MAX_MARK_DEPTH) fail(`MARKs nested deeper than ${MAX_MARK_DEPTH}`);
        marks.push(stack.length);
        break;
      case 0x7d:
        push(new PyDict());
        break;
      case 0x5d:
        push(new PyList());
        break;
      case 0x29:
        push(new PyTuple([]));
        break;
      case 0x74:
        opName = 'TUPLE';
        push(new PyTuple(popMark()));
        break;
      case 0x85:
      case 0x86:
      case 0x87: {
        opName = `TUPLE${op - 0x84}`;
        const items: PyValue[] = [];
        for (let i = 0; i < op - 0x84; i++) items.unshift(pop());
        push(new PyTuple(items));
        break;
      }
      case 0x4a:
        opName = 'BININT';
        push(view.getInt32(need(4), true));
        break;
      case 0x4b:
        opName = 'BININT1';
        push(bytes[need(1)]!);
        break;
      case 0x4d:
        opName = 'BININT2';
        push(view.getUint16(need(2), true));
        break;
      case 0x8a: {
        opName = 'LONG1';
        const n = bytes[need(1)]!;
        if (n > MAX_LONG1_BYTES) fail(`${n}-byte integer is wider than the ${MAX_LONG1_BYTES} bytes allowed`);
        const at = need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[at + i]!);
        if (n > 0 && bytes[at + n - 1]! & 0x80) v -= 1n << BigInt(8 * n); // two's complement
        push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x58:
        opName = 'BINUNICODE';
        push(text(view.getUint32(need(4), true)));
        break;
      case 0x8c:
        opName = 'SHORT_BINUNICODE';
        push(text(bytes[need(1)]!));
        break;
      case 0x8d: {
        opName = 'BINUNICODE8';
        const n = view.getBigUint64(need(8), true);
        if (n > BigInt(bytes.byteLength - pos)) fail(`string of ${n} bytes runs past the end of the data`);
        push(text(Number(n)));
        break;
      }
      case 0x42:
      case 0x43: {
        opName = op === 0x42 ? 'BINBYTES' : 'SHORT_BINBYTES';
        const n = op === 0x42 ? view.getUint32(need(4), true) : bytes[need(1)]!;
        const at = need(n);
        push(bytes.subarray(at, at + n));
        break;
      }
      case 0x4e:
        push(null);
        break;
      case 0x88:
        push(true);
        break;
      case 0x89:
        push(false);
        break;
      case 0x47:
        opName = 'BINFLOAT';
        push(new PyFloat(view.getFloat64(need(8), false)));
        break;
      case 0x71:
        opName = 'BINPUT';
        memoPut(bytes[need(1)]!);
        break;
      case 0x72:
        opName = 'LONG_BINPUT';
        memoPut(view.getUint32(need(4), true));
        break;
      case 0x94:
        opName = 'MEMOIZE';
        memoPut(memo.size);
        break;
      case 0x68:
        opName = 'BINGET';
        memoGet(bytes[need(1)]!);
        break;
      case 0x6a:
        opName = 'LONG_BINGET';
        memoGet(view.getUint32(need(4), true));
        break;
      case 0x73: {
        opName = 'SETITEM';
        const value = pop();
        const key = pop();
        setItem(top(), key, value);
        break;
      }
      case 0x75: {
        opName = 'SETITEMS';
        const items = popMark();
        if (items.length % 2) fail('odd number of items');
        const dict = top();
        for (let i = 0; i < items.length; i += 2) setItem(dict, items[i]!, items[i + 1]!);
        break;
      }
      case 0x61: {
        opName = 'APPEND';
        const value = pop();
        append(top(), value);
        break;
      }
      case 0x65: {
        opName = 'APPENDS';
        const items = popMark();
        const list = top();
        for (const item of items) append(list, item);
        break;
      }
      case 0x63: {
        opName = 'GLOBAL';
        const module = line();
        const name = line();
        push(resolveGlobal(module, name));
        break;
      }
      case 0x93: {
        opName = 'STACK_GLOBAL';
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('module and name must be strings');
        push(resolveGlobal(module as string, name as string));
        break;
      }
      case 0x52: {
        opName = 'REDUCE';
        const args = pop();
        const fn = pop();
        push(call(fn, args));
        break;
      }
      case 0x62: {
        opName = 'BUILD';
        const state = pop();
        const target = top();
        // BUILD sets attributes: OrderedDict.__reduce__ sends the state dict's `_metadata` this way.
        // Attributes are not tensors, so the state is dropped; BUILD on anything else is refused.
        if (!(target instanceof PyDict)) fail(`BUILD on ${typeName(target)} is not supported`);
        if (!(state === null || state instanceof PyDict || state instanceof PyTuple)) fail(`BUILD state of type ${typeName(state)}`);
        break;
      }
      case 0x51: {
        opName = 'BINPERSID';
        const pid = pop();
        if (!options.persistentLoad) fail('persistent ids are not expected in this pickle');
        push(options.persistentLoad!(pid));
        break;
      }
      default: {
        const name = REFUSED_OPCODES[op];
        if (name) throw new UnsafePickleError(source, `opcode ${name}`);
        fail(`invalid opcode 0x${op.toString(16).padStart(2, '0')} at byte ${opAt - start}`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Torch semantics: storages and tensors
// ---------------------------------------------------------------------------------------------

/** Tracks the storages a pickle references and rebuilds tensor descriptions against them. */
class StorageTable {
  readonly roots = new Map<string, RootStorage>();
  private readonly views = new Map<string, StorageRef>();

  constructor(
    private readonly source: string,
    /** 5-element ids (zip) or 6-element ids with view_metadata (legacy). */
    private readonly legacy: boolean,
  ) {}

  private fail(message: string): never {
    throw new WeightsFormatError(this.source, message);
  }

  private index(v: PyValue, what: string): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) return this.fail(`${what} must be a non-negative integer, got ${describe(v)}`);
    return v;
  }

  /** persistent_load: `('storage', torch.XStorage, key, location, numel[, view_metadata])`. */
  persistentLoad = (pid: PyValue): StorageRef => {
    const n = this.legacy ? 6 : 5;
    if (!(pid instanceof PyTuple) || pid.items.length !== n || pid.items[0] !== 'storage') {
      return this.fail(`persistent id must be a ('storage', type, key, location, numel${this.legacy ? ', view_metadata' : ''}) tuple, got ${describe(pid)}`);
    }
    const [, type, key, location, rawNumel, viewMetadata] = pid.items;
    if (!(type instanceof StorageType)) return this.fail(`storage type must be one of torch.*Storage, got ${describe(type!)}`);
    if (typeof key !== 'string') return this.fail(`storage key must be a string, got ${describe(key!)}`);
    if (typeof location !== 'string') return this.fail(`storage location must be a string, got ${describe(location!)}`);
    const numel = this.index(rawNumel!, `storage ${JSON.stringify(key)} element count`);
    if (!Number.isSafeInteger(numel * DTYPE_INFO[type.dtype].bytes)) this.fail(`storage ${JSON.stringify(key)} is absurdly large`);

    let root = this.roots.get(key);
    if (!root) {
      root = { key, dtype: type.dtype, numel };
      this.roots.set(key, root);
    } else if (root.dtype !== type.dtype) {
      this.fail(`storage ${JSON.stringify(key)} is referenced as both ${root.dtype} and ${type.dtype}`);
    } else if (root.numel !== numel) {
      this.fail(`storage ${JSON.stringify(key)} is referenced with ${root.numel} and with ${numel} elements`);
    }
    if (viewMetadata === undefined || viewMetadata === null) return new StorageRef(root, 0, numel);

    // Legacy storage views (torch < 0.4): (view_key, offset, size) in elements of the root storage.
    if (!(viewMetadata instanceof PyTuple) || viewMetadata.items.length !== 3 || typeof viewMetadata.items[0] !== 'string') {
      return this.fail(`storage view metadata must be (key, offset, size), got ${describe(viewMetadata)}`);
    }
    const viewKey = viewMetadata.items[0];
    const offset = this.index(viewMetadata.items[1]!, 'storage view offset');
    const size = this.index(viewMetadata.items[2]!, 'storage view size');
    if (offset + size > numel) this.fail(`storage view [${offset}, ${offset + size}) runs past storage ${JSON.stringify(key)} of ${numel} elements`);
    const existing = this.views.get(viewKey);
    if (existing) {
      if (existing.root !== root || existing.offset !== offset || existing.numel !== size) this.fail(`storage view ${JSON.stringify(viewKey)} is defined twice differently`);
      return existing;
    }
    const view = new StorageRef(root, offset, size);
    this.views.set(viewKey, view);
    return view;
  };

  /** `_rebuild_tensor(storage, storage_offset, size, stride)`, checked against the storage's declared size. */
  rebuildTensor = (storage: PyValue, rawOffset: PyValue, rawSize: PyValue, rawStride: PyValue): TensorRef => {
    if (!(storage instanceof StorageRef)) return this.fail(`tensor storage must be a persistent storage, got ${describe(storage)}`);
    const offset = this.index(rawOffset, 'tensor storage offset');
    if (!(rawSize instanceof PyTuple) || !(rawStride instanceof PyTuple)) return this.fail('tensor size and stride must be tuples');
    if (rawSize.items.length !== rawStride.items.length) this.fail(`tensor size has ${rawSize.items.length} dimensions but stride ${rawStride.items.length}`);
    if (rawSize.items.length > MAX_RANK) this.fail(`tensor has ${rawSize.items.length} dimensions (at most ${MAX_RANK})`);
    const size = rawSize.items.map((v) => this.index(v, 'tensor size'));
    const stride = rawStride.items.map((v) => this.index(v, 'tensor stride'));
    const shape = `[${size.join(', ')}]`;

    let numel = 1;
    for (const d of size) {
      numel *= d;
      if (!Number.isSafeInteger(numel)) this.fail(`tensor shape ${shape} has too many elements`);
    }
    // The last element read is offset + sum((size_i - 1) * stride_i); it must lie inside the storage.
    let last = offset;
    if (numel > 0) {
      for (let i = 0; i < size.length; i++) last += (size[i]! - 1) * stride[i]!;
      if (!Number.isSafeInteger(last) || last >= storage.numel) {
        this.fail(`tensor of shape ${shape} (stride [${stride.join(', ')}], offset ${offset}) reaches past the ${storage.numel} elements of storage ${JSON.stringify(storage.root.key)}`);
      }
    } else if (offset > storage.numel) {
      this.fail(`empty tensor's offset ${offset} is past the ${storage.numel} elements of storage ${JSON.stringify(storage.root.key)}`);
    }
    return new TensorRef(storage, offset, size, stride, numel);
  };

  /** Refuses a storage whose data holds `byteLength` bytes when the pickle's element count needs another size. */
  checkSize(root: RootStorage, byteLength: number): void {
    const needed = root.numel * DTYPE_INFO[root.dtype].bytes;
    if (byteLength !== needed) this.fail(`storage ${JSON.stringify(root.key)} holds ${byteLength} bytes but ${root.numel} ${root.dtype} elements need ${needed}`);
  }

  /** Gives a root its bytes: a view on `data` when aligned for its dtype, otherwise a copy. */
  attach(root: RootStorage, data: Uint8Array): void {
    const { bytes: width, array: Ctor } = DTYPE_INFO[root.dtype];
    this.checkSize(root, data.byteLength);
    if (data.byteOffset % width === 0) {
      root.data = new Ctor(data.buffer, data.byteOffset, root.numel);
    } else {
      root.data = new Ctor(root.numel);
      new Uint8Array(root.data.buffer, root.data.byteOffset, root.data.byteLength).set(data);
    }
  }
}

function describe(v: PyValue | undefined): string {
  if (v === undefined) return 'nothing';
  if (typeof v === 'string') return v.length > 40 ? `a string of length ${v.length}` : JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  return typeName(v);
}

/** The top-level dict as name -> tensor description. */
function stateDictOf(value: PyValue, source: string): Map<string, TensorRef> {
  if (!(value instanceof PyDict)) {
    throw new WeightsFormatError(source, `the pickle holds ${typeName(value)}, not a state dict (a dict of tensors)`);
  }
  const out = new Map<string, TensorRef>();
  for (const [key, v] of value.map) {
    if (typeof key !== 'string') throw new WeightsFormatError(source, `state dict key ${describe(key)} is not a string`);
    if (!(v instanceof TensorRef)) {
      throw new WeightsFormatError(source, `state dict entry ${JSON.stringify(key)} is ${typeName(v)}, not a tensor (a training checkpoint rather than a state dict?)`);
    }
    out.set(key, v);
  }
  return out;
}

type Indexable = { [index: number]: number | bigint };

/** Builds the tensors once every storage has its data: contiguous ones as views, others copied. */
function materialize(refs: Map<string, TensorRef>, roots: Iterable<RootStorage>, source: string): Map<string, Tensor> {
  let storageBytes = 0;
  for (const root of roots) storageBytes += root.data!.byteLength;
  let budget = Math.max(storageBytes, COPY_BUDGET_FLOOR_BYTES);

  const out = new Map<string, Tensor>();
  for (const [name, ref] of refs) {
    const { root } = ref.storage;
    const src = root.data!;
    const start = ref.storage.offset + ref.offset;
    const { size, stride, numel } = ref;
    let contiguous = true;
    for (let i = size.length - 1, expected = 1; i >= 0; i--) {
      if (size[i] !== 1 && stride[i] !== expected) contiguous = false;
      expected *= size[i]!;
    }
    let data: AnyTypedArray;
    if (contiguous || numel === 0) {
      data = src.subarray(start, start + numel);
    } else {
      const bytes = numel * DTYPE_INFO[root.dtype].bytes;
      if (bytes > budget) {
        throw new WeightsFormatError(source, `tensor ${JSON.stringify(name)} is a strided view whose copy would exceed the memory budget for copies (${Math.max(storageBytes, COPY_BUDGET_FLOOR_BYTES)} bytes)`);
      }
      budget -= bytes;
      data = new DTYPE_INFO[root.dtype].array(numel);
      copyStrided(src as unknown as Indexable, data as unknown as Indexable, start, size, stride);
    }
    out.set(name, new Tensor(root.dtype, size, data as TypedArrayFor<DType>));
  }
  return out;
}

/** Copies the elements of a strided view into row-major order (iteratively: rank can be 64). */
function copyStrided(src: Indexable, dst: Indexable, start: number, size: readonly number[], stride: readonly number[]): void {
  const rank = size.length;
  const inner = size[rank - 1]!;
  const innerStride = stride[rank - 1]!;
  const index = new Array<number>(rank).fill(0);
  let base = start;
  let o = 0;
  for (;;) {
    for (let i = 0, p = base; i < inner; i++, p += innerStride) dst[o++] = src[p]!;
    let d = rank - 2;
    for (; d >= 0; d--) {
      base += stride[d]!;
      if (++index[d]! < size[d]!) break;
      base -= stride[d]! * size[d]!;
      index[d] = 0;
    }
    if (d < 0) return;
  }
}

// ---------------------------------------------------------------------------------------------
// The two containers
// ---------------------------------------------------------------------------------------------

function parseZipCheckpoint(bytes: Uint8Array, source: string): Map<string, Tensor> {
  const entries = readZipDirectory(bytes, source);
  // torch puts every record under one folder named after the file ("archive/" in older versions).
  const pickles = [...entries.keys()].filter((name) => /^[^/]+\/data\.pkl$/.test(name));
  if (pickles.length !== 1) {
    throw new WeightsFormatError(source, pickles.length ? `zip archive holds ${pickles.length} data.pkl records` : 'zip archive has no <archive>/data.pkl: not a PyTorch checkpoint');
  }
  const prefix = pickles[0]!.slice(0, -'data.pkl'.length);

  const byteorder = entries.get(`${prefix}byteorder`);
  if (byteorder) {
    if (byteorder.size > MAX_BYTEORDER_BYTES) throw new WeightsFormatError(source, `${prefix}byteorder declares ${byteorder.size} bytes; it holds "little" or "big"`);
    const order = Buffer.from(readZipEntry(bytes, source, byteorder)).toString('latin1');
    if (order !== 'little') throw new WeightsFormatError(source, `byteorder is ${JSON.stringify(order)}: only little-endian checkpoints are supported`);
  }

  const table = new StorageTable(source, false);
  const pickleEntry = entries.get(pickles[0]!)!;
  if (pickleEntry.size > MAX_PICKLE_BYTES) {
    throw new WeightsFormatError(source, `${pickles[0]} declares ${pickleEntry.size} bytes, more than the ${MAX_PICKLE_BYTES} a state dict's pickle can need`);
  }
  const pickle = readZipEntry(bytes, source, pickleEntry);
  const { value, end } = unpickle(pickle, 0, source, { label: pickles[0]!, persistentLoad: table.persistentLoad, rebuildTensor: table.rebuildTensor });
  if (end !== pickle.byteLength) throw new WeightsFormatError(source, `${pickles[0]}: ${pickle.byteLength - end} bytes after STOP`);
  const refs = stateDictOf(value, source);

  // Every storage entry must declare exactly the size the pickle gives its storage, checked for
  // all of them before any is read: so no inflate allocates more than the pickle declared for its
  // storage, and all of them together no more than the sum of those sizes.
  const storageEntries: [RootStorage, ZipEntry][] = [];
  for (const root of table.roots.values()) {
    const entry = entries.get(`${prefix}data/${root.key}`);
    if (!entry) throw new WeightsFormatError(source, `storage ${JSON.stringify(root.key)} is referenced but ${prefix}data/${root.key} is not in the archive`);
    table.checkSize(root, entry.size);
    storageEntries.push([root, entry]);
  }
  for (const [root, entry] of storageEntries) table.attach(root, readZipEntry(bytes, source, entry));
  return materialize(refs, table.roots.values(), source);
}

function parseLegacyCheckpoint(bytes: Uint8Array, source: string): Map<string, Tensor> {
  if (bytes[0] !== 0x80) throw new WeightsFormatError(source, 'not a PyTorch checkpoint: neither a zip archive nor a legacy pickle');
  let pos = 0;
  const next = (label: string, options: Partial<UnpickleOptions> = {}): PyValue => {
    const { value, end } = unpickle(bytes, pos, source, { label, ...options });
    pos = end;
    return value;
  };

  const magic = next('legacy magic number');
  if (magic !== LEGACY_MAGIC) throw new WeightsFormatError(source, 'not a PyTorch checkpoint: neither a zip archive nor a legacy file with torch\'s magic number');
  const version = next('legacy protocol version');
  if (version !== LEGACY_PROTOCOL_VERSION) throw new WeightsFormatError(source, `legacy protocol version ${describe(version)} is not supported (${LEGACY_PROTOCOL_VERSION})`);
  const sysInfo = next('legacy sys_info');
  if (!(sysInfo instanceof PyDict)) throw new WeightsFormatError(source, `legacy sys_info must be a dict, got ${typeName(sysInfo)}`);
  if (sysInfo.map.has('little_endian') && sysInfo.map.get('little_endian') !== true) {
    throw new WeightsFormatError(source, 'the checkpoint was written big-endian: only little-endian checkpoints are supported');
  }

  const table = new StorageTable(source, true);
  const refs = stateDictOf(next('legacy state dict', { persistentLoad: table.persistentLoad, rebuildTensor: table.rebuildTensor }), source);
  const keys = next('legacy storage keys');
  if (!(keys instanceof PyList) || !keys.items.every((k) => typeof k === 'string')) {
    throw new WeightsFormatError(source, `legacy storage keys must be a list of strings, got ${typeName(keys)}`);
  }

  // The raw storages follow in the order of the key list, each as int64 count + bytes.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const seen = new Set<string>();
  for (const key of keys.items as string[]) {
    const root = table.roots.get(key);
    if (!root) throw new WeightsFormatError(source, `storage ${JSON.stringify(key)} is listed but never referenced by the state dict`);
    if (seen.has(key)) throw new WeightsFormatError(source, `storage ${JSON.stringify(key)} is listed twice`);
    seen.add(key);
    if (pos + 8 > bytes.byteLength) throw new WeightsFormatError(source, `the file ends before storage ${JSON.stringify(key)} (truncated?)`);
    const count = view.getBigInt64(pos, true);
    if (count !== BigInt(root.numel)) {
      throw new WeightsFormatError(source, `storage ${JSON.stringify(key)} is stored with ${count} elements but referenced with ${root.numel}`);
    }
    pos += 8;
    const n = root.numel * DTYPE_INFO[root.dtype].bytes;
    if (n > bytes.byteLength - pos) throw new WeightsFormatError(source, `storage ${JSON.stringify(key)} (${n} bytes) runs past the end of the file (truncated?)`);
    table.attach(root, bytes.subarray(pos, pos + n));
    pos += n;
  }
  for (const key of table.roots.keys()) {
    if (!seen.has(key)) throw new WeightsFormatError(source, `storage ${JSON.stringify(key)} is referenced but its data is not in the file`);
  }
  if (pos !== bytes.byteLength) throw new WeightsFormatError(source, `${bytes.byteLength - pos} unexpected bytes after the last storage`);
  return materialize(refs, table.roots.values(), source);
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/**
 * Parses a PyTorch checkpoint held in memory (zip or legacy format) into name -> tensor, each with
 * its storage's dtype (bfloat16/float16 as raw 16-bit words). Contiguous tensors whose storage is
 * aligned in `bytes` are views on `bytes.buffer`; the others are copies. Nothing in the file is
 * ever executed: a global outside the allow-list is refused with UnsafePickleError.
 */
export function parsePytorchCheckpoint(bytes: Uint8Array, source: string): Map<string, Tensor> {
  if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError('bytes', 'a Uint8Array', bytes);
  if (bytes.byteLength === 0) throw new WeightsFormatError(source, 'file is empty');
  try {
    // torch tells the formats apart the same way: a zip starts with a local header (or, empty, its end record).
    const zip = bytes.byteLength >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && ((bytes[2] === 3 && bytes[3] === 4) || (bytes[2] === 5 && bytes[3] === 6));
    return zip ? parseZipCheckpoint(bytes, source) : parseLegacyCheckpoint(bytes, source);
  } catch (err) {
    if (err instanceof PerceiverError) throw err;
    // Every condition is checked explicitly above; this is a backstop so that an engine limit
    // (e.g. a failed allocation) still reaches the caller as a format error, not a RangeError.
    throw new WeightsFormatError(source, `cannot read the checkpoint: ${(err as Error).message}`, { cause: err });
  }
}

/** Reads (one read of the whole file) and parses a PyTorch checkpoint. */
export async function readPytorchCheckpoint(path: string): Promise<Map<string, Tensor>> {
  return parsePytorchCheckpoint(await readWeightsFile(path), path);
}
