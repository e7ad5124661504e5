/**
 * One writer per output folder (or per disjoint part of it): two `embed` runs on one `--out` would
 * each see the same items as not done and write every row twice.
 *
 * A run holds a lock file in the folder, `.perceiver-io-lock.<scope>`, naming its pid, host, start
 * time and scope. Scopes that never write the same item may hold the folder together: shards
 * `i/N` of one count N (each item is in exactly one), and enqueuers of the BullMQ queue (they
 * coordinate through Redis). Everything else conflicts: an unsharded run with anything, shards of
 * different counts, a local run with an enqueuer. A run that meets a conflicting live lock fails
 * with OutputLockedError, at once, naming the holder.
 *
 * Taking a lock: the content is written to an exclusive temporary file, then hard-linked to the
 * lock's name (link() fails with EEXIST when the name is taken), so a lock is never seen half
 * written. Then the other lock files are read: a conflicting live one makes this run let go and
 * fail. Two conflicting runs starting together may thus both fail; neither writes.
 *
 * Stale locks: a lock whose pid is gone on this host (a run killed with SIGKILL) is recovered, once
 * and atomically: recovering a lock with nonce N first creates `<lock>.takeover-<N>` exclusively;
 * only the process that creates it removes the lock, and since nobody else removes a lock of nonce
 * N, the lock it removes is that stale one. The marker stays until the process that made it lets go
 * of the lock it then takes (others are removed once a minute old). A lock of another host is never judged stale (its pid
 * cannot be checked): the error says which file to remove once that run is known to be gone.
 *
 * On an S3 prefix (lib/batch/store.ts) there is no exclusive create to rely on (s3rver has no
 * conditional PUT) and no rename, so every lock has a name of its own, `.perceiver-io-lock.s3-<nonce>`:
 * a run writes its lock, then lists the others; a conflicting live one makes it remove its own
 * and fail. S3 lists what was written before (strong consistency), so of two conflicting runs the
 * later to list sees the other: at most one goes on, and when both list late, neither does. A
 * stale lock (its pid gone on this host) is removed by whoever finds it: no takeover marker is
 * needed, since no other run can ever hold a lock of that name.
 *
 * Written by hand: proper-lockfile and lockfile judge staleness by mtime alone, hold one lock per
 * path (no compatible scopes), and remove a stale lock with a plain unlink, which can remove the
 * lock another process has just taken over.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { OutputLockedError } from '../errors.js';
import { createTempFile, discardTempFile } from '../io/temp_file.js';
import { isS3Output, partStore } from './store.js';

/** What part of the folder a run writes. */
export type LockScope = { kind: 'all' } | { kind: 'shard'; index: number; count: number } | { kind: 'queue' };

export interface OutputLock {
  /** The lock file. */
  readonly file: string;
  /** Removes the lock file (only if it is still this run's); idempotent. */
  release(): Promise<void>;
}

interface LockContent {
  pid: number;
  host: string;
  /** ISO time the run started. */
  started: string;
  /** `all`, `shard i/N` or `queue`. */
  scope: string;
  nonce: string;
}

const PREFIX = '.perceiver-io-lock.';
const TAKEOVER = '.takeover-';
/**
 * Takeover markers of other runs (a contender that recovered a stale lock but lost the race for the
 * new one, or crashed) are removed after this long: any process that read the stale lock has long
 * acted on that read.
 */
const TAKEOVER_MARKER_MS = 60_000;
/** Tries before giving up on a lock that other processes keep recovering or releasing under us. */
const TRIES = 50;

function scopeText(scope: LockScope): string {
  return scope.kind === 'shard' ? `shard ${scope.index}/${scope.count}` : scope.kind;
}

function lockName(scope: LockScope, nonce: string): string {
  if (scope.kind === 'shard') return `${PREFIX}shard-${scope.index}-of-${scope.count}`;
  // Enqueuers coexist: each has its own file.
  if (scope.kind === 'queue') return `${PREFIX}queue-${nonce}`;
  return `${PREFIX}all`;
}

/** Whether two scopes may write the same folder at once. */
function compatible(a: string, b: string): boolean {
  if (a === 'queue' && b === 'queue') return true;
  const sa = /^shard (\d+)\/(\d+)$/.exec(a);
  const sb = /^shard (\d+)\/(\d+)$/.exec(b);
  return sa !== null && sb !== null && sa[2] === sb[2] && sa[1] !== sb[1];
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isStale(holder: LockContent): boolean {
  return holder.host === hostname() && !processAlive(holder.pid);
}

/** The lock's content; undefined when it is gone (or not a lock file this module wrote). */
async function readLock(file: string): Promise<LockContent | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  return parseLock(text);
}

/** A lock's content as written by this module, or an unknown holder of scope `all` for anything else. */
function parseLock(text: string): LockContent {
  try {
    const value = JSON.parse(text) as Partial<LockContent>;
    if (Number.isSafeInteger(value.pid) && typeof value.host === 'string' && typeof value.started === 'string' && typeof value.scope === 'string' && typeof value.nonce === 'string') {
      return value as LockContent;
    }
  } catch {
    // not JSON: an unknown holder
  }
  return { pid: 0, host: '?', started: '?', scope: 'all', nonce: `unreadable-${text.length}` };
}

/**
 * Removes the stale lock `file` of nonce `holder.nonce`, unless another process is doing so. The
 * exclusive takeover marker makes the removal happen once: see the module comment.
 */
async function recoverStale(file: string, holder: LockContent, markers: string[]): Promise<void> {
  const marker = `${file}${TAKEOVER}${holder.nonce}`;
  try {
    await fsp.writeFile(marker, `${process.pid}@${hostname()}`, { flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return; // another process recovers it
    throw error;
  }
  markers.push(marker);
  await fsp.rm(file, { force: true });
}

/** A lock's content before it is linked into place: `..perceiver-io-lock.<scope>.<host>.<pid>.<random>.tmp`. */
const LOCK_TEMP = /^\.\.perceiver-io-lock\.[^.]+\.(.+)\.(\d+)\.[0-9a-f]{32}\.tmp$/;

/**
 * Removes takeover markers old enough that no process can still act on the lock they were for, and
 * the lock contents a run killed while taking its lock left unlinked (its pid gone on this host).
 */
async function removeOldMarkers(outDir: string, names: string[]): Promise<void> {
  for (const name of names) {
    const temp = LOCK_TEMP.exec(name);
    if (temp && temp[1] === hostname() && !processAlive(Number(temp[2]))) await fsp.rm(join(outDir, name), { force: true });
    if (!name.startsWith(PREFIX) || !name.includes(TAKEOVER)) continue;
    const file = join(outDir, name);
    const stat = await fsp.lstat(file).catch(() => undefined);
    if (stat && Date.now() - stat.mtimeMs > TAKEOVER_MARKER_MS) await fsp.rm(file, { force: true });
  }
}

function lockedError(outDir: string, file: string, holder: LockContent, mine: string): OutputLockedError {
  const who = `pid ${holder.pid} on ${holder.host}, started ${holder.started}`;
  const remote = holder.host !== hostname() ? `; once that run is known to be gone, remove ${file}` : '';
  const what = holder.scope === mine ? 'another run' : `another run (${holder.scope})`;
  return new OutputLockedError(
    outDir,
    file,
    { pid: holder.pid, host: holder.host, started: holder.started, scope: holder.scope },
    `${outDir} is being written by ${what}: ${who} (${file}); wait for it to finish, or use another --out${remote}`,
  );
}

/**
 * Takes the output folder `outDir` (which must exist) for a run of `scope`; rejects with
 * OutputLockedError when a live run holds a conflicting scope.
 */
export async function lockOutputFolder(outDir: string, scope: LockScope): Promise<OutputLock> {
  if (isS3Output(outDir)) return lockS3Output(outDir, scope);
  const nonce = randomBytes(12).toString('hex');
  const mine = scopeText(scope);
  const file = join(outDir, lockName(scope, nonce));
  const content: LockContent = { pid: process.pid, host: hostname(), started: new Date().toISOString(), scope: mine, nonce };
  // Takeover markers this run created: removed when it lets go, by when any process that read the
  // stale lock before it was removed has long acted on that read.
  const markers: string[] = [];

  // The content first, in a file of its own; link() then publishes it whole under the lock's name.
  const temp = await createTempFile(file, { tag: `${hostname()}.${process.pid}` });
  try {
    await temp.handle.writeFile(JSON.stringify(content) + '\n');
    await temp.handle.close();
    for (let attempt = 1; ; attempt++) {
      try {
        await fsp.link(temp.path, file);
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const holder = await readLock(file);
      if (holder === undefined) continue; // released meanwhile
      if (!isStale(holder) || attempt >= TRIES) throw lockedError(outDir, file, holder, mine);
      await recoverStale(file, holder, markers);
      await new Promise((resolveWait) => setTimeout(resolveWait, 20));
    }
  } finally {
    await discardTempFile(temp);
  }

  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    const holder = await readLock(file).catch(() => undefined);
    if (holder?.nonce === nonce) await fsp.rm(file, { force: true });
    for (const marker of markers) await fsp.rm(marker, { force: true });
    await removeOldMarkers(outDir, await fsp.readdir(outDir).catch(() => []));
  };

  try {
    const names = await fsp.readdir(outDir);
    for (const name of names) {
      if (!name.startsWith(PREFIX) || name.includes(TAKEOVER) || join(outDir, name) === file) continue;
      const other = join(outDir, name);
      const holder = await readLock(other);
      if (holder === undefined) continue;
      // Stale locks go, compatible or not (an enqueuer killed with SIGKILL leaves one).
      if (isStale(holder)) await recoverStale(other, holder, markers);
      else if (!compatible(mine, holder.scope)) throw lockedError(outDir, other, holder, mine);
    }
    await removeOldMarkers(outDir, names);
  } catch (error) {
    await release();
    throw error;
  }
  return { file, release };
}

/** lockOutputFolder for an S3 prefix: unique lock names, then a look at the others (see the module comment). */
async function lockS3Output(outDir: string, scope: LockScope): Promise<OutputLock> {
  const store = partStore(outDir);
  const nonce = randomBytes(12).toString('hex');
  const mine = scopeText(scope);
  const name = `${PREFIX}s3-${nonce}`;
  const file = store.path(name);
  const content: LockContent = { pid: process.pid, host: hostname(), started: new Date().toISOString(), scope: mine, nonce };
  await store.write(name, JSON.stringify(content) + '\n');
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    await store.remove(name);
  };
  try {
    for (const object of await store.list()) {
      if (!object.name.startsWith(PREFIX) || object.name === name) continue;
      const bytes = await store.read(object.name);
      if (bytes === undefined) continue; // released meanwhile
      const holder = parseLock(bytes.toString('utf8'));
      if (isStale(holder)) await store.remove(object.name);
      else if (!compatible(mine, holder.scope)) throw lockedError(outDir, store.path(object.name), holder, mine);
    }
  } catch (error) {
    await release().catch(() => {});
    throw error;
  }
  return { file, release };
}
