/**
 * A small zip writer (STORED or DEFLATE, with optional forged fields) for building test archives
 * and for the fuzz harness's re-wrapping of mutated pickles. Test support, not a library feature:
 * perceiver-io only reads zips.
 */
import * as zlib from 'node:zlib';

const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};

export interface ZipFile {
  name: string;
  data: Uint8Array;
  method?: number;
  flags?: number;
  crc?: number;
  /** Forged uncompressed / compressed sizes, written through a ZIP64 extra field. */
  forgedSize?: bigint;
  forgedCompressedSize?: bigint;
  /** With method 8: these bytes as the entry's DEFLATE data instead of `data` compressed (`data` still gives the CRC and size). */
  deflated?: Uint8Array;
}

export function makeZip(files: ZipFile[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const f of files) {
    const method = f.method ?? 0;
    const stored = method === 8 ? Buffer.from(f.deflated ?? zlib.deflateRawSync(f.data)) : Buffer.from(f.data);
    const crc = f.crc ?? zlib.crc32(f.data);
    const name = Buffer.from(f.name, 'utf8');
    const flags = f.flags ?? 0x800;
    const size32 = f.forgedSize !== undefined ? 0xffffffff : f.data.byteLength;
    const csize32 = f.forgedCompressedSize !== undefined ? 0xffffffff : stored.byteLength;
    const zip64 = [f.forgedSize, f.forgedCompressedSize].filter((v): v is bigint => v !== undefined).map(u64);
    const extra = zip64.length ? Buffer.concat([Buffer.from([1, 0, 8 * zip64.length, 0]), ...zip64]) : Buffer.alloc(0);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(flags, 6);
    local.writeUInt16LE(method, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(csize32, 18);
    local.writeUInt32LE(size32, 22);
    local.writeUInt16LE(name.byteLength, 26);
    locals.push(local, name, stored);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(flags, 8);
    central.writeUInt16LE(method, 10);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(csize32, 20);
    central.writeUInt32LE(size32, 24);
    central.writeUInt16LE(name.byteLength, 28);
    central.writeUInt16LE(extra.byteLength, 30);
    central.writeUInt32LE(offset, 42);
    centrals.push(central, name, extra);
    offset += 30 + name.byteLength + stored.byteLength;
  }
  const cd = Buffer.concat(centrals);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(files.length, 8);
  eocd.writeUInt16LE(files.length, 10);
  eocd.writeUInt32LE(cd.byteLength, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, eocd]);
}

