/**
 * WebDataset tar shards as batch inputs, local or remote (`s3://`, `http(s)://`), streamed with
 * tar-stream: a shard is never written to disk nor held whole.
 *
 * A shard input (a path or URL ending in `.tar`) is read once at discovery to list its members
 * with a known media extension (`000123.jpg`, `000123.txt`, ...; what the model takes is decided
 * as for files). Each member is one item whose path is `SHARD.tar#MEMBER`, so its id, resume and
 * shards work as for files. In the run a shard is streamed again, once, in order: the members this
 * run wants are kept in memory until their batch takes them (at most `bufferBytes` ahead of the
 * batches while nobody waits; more only when a batch waits for a member further on, which happens
 * when the items are not in the shard's order). So a remote shard is transferred twice (listing,
 * then reading); members are never fetched one by one.
 */
import { createReadStream } from 'node:fs';
import { MediaDecodeError } from '../errors.js';
import { isRemote, type RemoteReader } from '../io/remote.js';
import { mediaKindOf } from '../media/kinds.js';

/** Between a shard and its member in an item's path. */
export const MEMBER_SEPARATOR = '#';

/** Whether an input names a tar shard (by its extension). */
export function isTarShard(path: string): boolean {
  return /\.tar$/i.test(path.replace(/[?].*$/, ''));
}

/** `SHARD.tar#MEMBER` split, or undefined for any other path. */
export function splitMember(path: string): { shard: string; member: string } | undefined {
  const m = /^(.*\.tar)#(.+)$/i.exec(path);
  return m ? { shard: m[1]!, member: m[2]! } : undefined;
}

async function shardStream(shard: string, remote: () => RemoteReader): Promise<AsyncIterable<Uint8Array>> {
  if (isRemote(shard)) return remote().openStream(shard);
  return createReadStream(shard, { highWaterMark: 1 << 20 });
}

async function extractor() {
  const tar = (await import('tar-stream')).default;
  return tar.extract();
}

/** Feeds a byte stream into a tar-stream extractor, with its backpressure; errors end the extractor. */
interface ByteSink {
  write(chunk: Uint8Array): boolean;
  once(event: 'drain', listener: () => void): unknown;
  end(): unknown;
  destroy(error?: Error): unknown;
}

function pipeInto(source: AsyncIterable<Uint8Array>, sink: unknown): void {
  const extract = sink as ByteSink;
  void (async () => {
    try {
      for await (const chunk of source) {
        if (!extract.write(chunk)) await new Promise<void>((resolve) => extract.once('drain', resolve));
      }
      extract.end();
    } catch (error) {
      extract.destroy(error as Error);
    }
  })();
}

/** The media members of a shard, in its order, as `SHARD#MEMBER` paths (with their SHA-256 when `hash`). */
export async function listShardMembers(shard: string, remote: () => RemoteReader, hash = false): Promise<{ path: string; sha256?: string }[]> {
  const { createHash } = await import('node:crypto');
  const members: { path: string; sha256?: string }[] = [];
  const extract = await extractor();
  try {
    pipeInto(await shardStream(shard, remote), extract);
    for await (const entry of extract) {
      const { name, type } = entry.header;
      const media = type === 'file' && mediaKindOf(name) !== undefined;
      const digest = media && hash ? createHash('sha256') : undefined;
      for await (const chunk of entry) digest?.update(chunk as Buffer);
      if (media) members.push({ path: `${shard}${MEMBER_SEPARATOR}${name}`, sha256: digest?.digest('hex') });
    }
  } catch (error) {
    if (error instanceof MediaDecodeError) throw error;
    throw new MediaDecodeError(shard, `not a readable tar shard (${(error as Error).message.split('\n')[0]})`, { cause: error });
  }
  return members;
}

interface ShardState {
  buffered: Map<string, Buffer>;
  bufferedBytes: number;
  waiters: Map<string, { resolve: (bytes: Buffer) => void; reject: (error: Error) => void }[]>;
  done: boolean;
  error?: Error;
  /** Wakes the reading loop when it paused for a full buffer. */
  wake?: () => void;
}

/** Serves members of shards to the batches, streaming each shard once (see the module comment). */
export class ShardMemberReader {
  private readonly shards = new Map<string, ShardState>();
  private closed = false;

  constructor(
    private readonly remote: () => RemoteReader,
    /** The member paths this run will ask for (others are skipped as they pass). */
    private readonly wanted: Set<string>,
    private readonly bufferBytes = 256 * 1024 * 1024,
  ) {}

  async read(path: string): Promise<Buffer> {
    const split = splitMember(path);
    if (!split) throw new MediaDecodeError(path, 'not a member of a .tar shard');
    let state = this.shards.get(split.shard);
    if (!state) {
      state = { buffered: new Map(), bufferedBytes: 0, waiters: new Map(), done: false };
      this.shards.set(split.shard, state);
      void this.stream(split.shard, state);
    }
    const ready = state.buffered.get(split.member);
    if (ready) {
      state.buffered.delete(split.member);
      state.bufferedBytes -= ready.length;
      state.wake?.();
      return ready;
    }
    if (state.done) throw state.error ?? new MediaDecodeError(path, 'no such member in the shard');
    return new Promise<Buffer>((resolve, reject) => {
      const list = state.waiters.get(split.member) ?? [];
      list.push({ resolve, reject });
      state.waiters.set(split.member, list);
      state.wake?.();
    });
  }

  private async stream(shard: string, state: ShardState): Promise<void> {
    try {
      const extract = await extractor();
      pipeInto(await shardStream(shard, this.remote), extract);
      for await (const entry of extract) {
        if (this.closed) {
          extract.destroy();
          break;
        }
        const name = entry.header.name;
        const path = `${shard}${MEMBER_SEPARATOR}${name}`;
        if (entry.header.type !== 'file' || !this.wanted.has(path)) {
          // Drained without keeping it.
          for await (const _ of entry) void _;
          continue;
        }
        const chunks: Buffer[] = [];
        for await (const chunk of entry) chunks.push(chunk as Buffer);
        const bytes = Buffer.concat(chunks);
        const waiting = state.waiters.get(name);
        if (waiting?.length) {
          state.waiters.delete(name);
          // Several batches asking for one member (never, with unique items) all get it.
          for (const w of waiting) w.resolve(bytes);
        } else {
          state.buffered.set(name, bytes);
          state.bufferedBytes += bytes.length;
        }
        // Far enough ahead of the batches: wait until one takes a member or waits for one.
        while (!this.closed && state.bufferedBytes > this.bufferBytes && state.waiters.size === 0) {
          await new Promise<void>((resolve) => (state.wake = resolve));
          state.wake = undefined;
        }
      }
    } catch (error) {
      state.error = error instanceof MediaDecodeError ? error : new MediaDecodeError(shard, `not a readable tar shard (${(error as Error).message.split('\n')[0]})`, { cause: error });
    }
    state.done = true;
    for (const [member, list] of state.waiters) for (const w of list) w.reject(state.error ?? new MediaDecodeError(`${shard}${MEMBER_SEPARATOR}${member}`, 'no such member in the shard'));
    state.waiters.clear();
  }

  /** Drops what is buffered. */
  close(): void {
    this.closed = true;
    for (const state of this.shards.values()) {
      state.buffered.clear();
      state.bufferedBytes = 0;
      state.wake?.();
    }
    this.shards.clear();
  }
}
