/**
 * The output folder lock (lib/batch/output_lock.ts) in one process: conflicting scopes refused with
 * OutputLockedError naming the holder, compatible ones (shards of one count, enqueuers) together,
 * a stale lock (dead pid on this host) recovered by exactly one of many contenders, a lock of
 * another host never judged stale, and nothing left behind once released.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { OutputLockedError } from '../lib/errors.js';
import { lockOutputFolder, type LockScope } from '../lib/batch/output_lock.js';
import { tempDir } from './helpers/fixtures.js';

async function deadPid(): Promise<number> {
  const gone = spawn(process.execPath, ['-e', '0']);
  await new Promise((resolve) => gone.on('exit', resolve));
  return gone.pid!;
}

const ALL: LockScope = { kind: 'all' };
const shard = (index: number, count: number): LockScope => ({ kind: 'shard', index, count });

t.test('conflicting scopes are refused, naming the holder; compatible ones hold the folder together', async (t) => {
  const dir = await tempDir(t);
  const all = await lockOutputFolder(dir, ALL);
  const content = JSON.parse(await readFile(all.file, 'utf8'));
  t.same([content.pid, content.host, content.scope], [process.pid, hostname(), 'all'], 'the lock names its pid, host and scope');
  t.ok(!Number.isNaN(Date.parse(content.started)), 'and its start time');
  for (const scope of [ALL, shard(0, 2), { kind: 'queue' } as LockScope]) {
    const error = await lockOutputFolder(dir, scope).catch((e: unknown) => e);
    t.type(error, OutputLockedError, `${JSON.stringify(scope)} refused while an unsharded run holds the folder`);
    t.match((error as Error).message, new RegExp(`is being written by another run.*pid ${process.pid} on ${hostname()}, started `));
    t.equal((error as OutputLockedError).lockFile, all.file, 'names the lock file');
  }
  await all.release();
  await all.release(); // idempotent
  t.same(await readdir(dir), [], 'nothing left after release');

  const zero = await lockOutputFolder(dir, shard(0, 2));
  const one = await lockOutputFolder(dir, shard(1, 2));
  t.pass('shards 0/2 and 1/2 hold the folder together');
  await t.rejects(lockOutputFolder(dir, shard(1, 2)), OutputLockedError, 'the same shard twice: refused');
  await t.rejects(lockOutputFolder(dir, shard(0, 3)), { name: 'OutputLockedError', message: /another run \(shard \d\/2\)/ }, 'a shard of another count: refused');
  await t.rejects(lockOutputFolder(dir, ALL), OutputLockedError, 'an unsharded run: refused');
  await t.rejects(lockOutputFolder(dir, { kind: 'queue' }), OutputLockedError, 'an enqueuer: refused');
  await Promise.all([zero.release(), one.release()]);

  const q1 = await lockOutputFolder(dir, { kind: 'queue' });
  const q2 = await lockOutputFolder(dir, { kind: 'queue' });
  t.pass('two enqueuers together');
  await t.rejects(lockOutputFolder(dir, ALL), OutputLockedError, 'a local run while enqueuers hold the folder: refused');
  await Promise.all([q1.release(), q2.release()]);
  t.same(await readdir(dir), [], 'nothing left');
});

t.test('a stale lock is recovered by exactly one of ten contenders; another host\'s lock never is', async (t) => {
  const dir = await tempDir(t);
  const stale = join(dir, '.perceiver-io-lock.all');
  await writeFile(stale, JSON.stringify({ pid: await deadPid(), host: hostname(), started: new Date(0).toISOString(), scope: 'all', nonce: 'deadbeef' }));
  const settled = await Promise.allSettled(Array.from({ length: 10 }, () => lockOutputFolder(dir, ALL)));
  const won = settled.filter((s) => s.status === 'fulfilled');
  t.equal(won.length, 1, 'one contender took the folder');
  t.ok(
    settled.every((s) => s.status === 'fulfilled' || s.reason instanceof OutputLockedError),
    'the others got OutputLockedError',
  );
  const holder = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof lockOutputFolder>>>).value;
  t.equal(JSON.parse(await readFile(stale, 'utf8')).pid, process.pid, 'the lock is the winner\'s now');
  await holder.release();
  // The marker of the contender that recovered the lock stays a minute (whether or not it won the
  // new lock), so a contender that read the stale lock just before cannot recover it a second time.
  // (It is gone already when the contender that recovered the lock also won it.)
  const left = await readdir(dir);
  t.ok(left.length <= 1 && left.every((name) => name === '.perceiver-io-lock.all.takeover-deadbeef'), `the lock is gone; at most the takeover marker is left (${left.join(', ')})`);
  const old = new Date(Date.now() - 120_000);
  for (const name of left) await utimes(join(dir, name), old, old);

  // A stale lock of another scope does not block either.
  await writeFile(join(dir, '.perceiver-io-lock.shard-0-of-2'), JSON.stringify({ pid: await deadPid(), host: hostname(), started: 'then', scope: 'shard 0/2', nonce: 'cafe' }));
  const all = await lockOutputFolder(dir, ALL);
  await all.release();
  t.same(await readdir(dir), [], 'the stale shard lock, its marker (made by this run) and the old marker are removed');

  // A killed enqueuer's lock goes too, though enqueuers may share the folder.
  await writeFile(join(dir, '.perceiver-io-lock.queue-0123'), JSON.stringify({ pid: await deadPid(), host: hostname(), started: 'then', scope: 'queue', nonce: 'beef' }));
  const queue = await lockOutputFolder(dir, { kind: 'queue' });
  await queue.release();
  t.same(await readdir(dir), [], 'a stale enqueuer lock is removed by the next enqueuer');

  await writeFile(stale, JSON.stringify({ pid: await deadPid(), host: 'elsewhere.example', started: 'then', scope: 'all', nonce: 'far' }));
  const remote = await lockOutputFolder(dir, ALL).catch((e: unknown) => e);
  t.type(remote, OutputLockedError, 'a lock of another host is not judged by its pid');
  t.match((remote as Error).message, new RegExp(`on elsewhere\\.example.*once that run is known to be gone, remove ${stale.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), 'says which file to remove');

  await writeFile(stale, 'garbage');
  await t.rejects(lockOutputFolder(dir, ALL), OutputLockedError, 'an unreadable lock is not taken over');
});
