/**
 * What the queue tests share: `perceiver-io` (dist/) as child processes, folders of small text
 * files, and the exactly-once check of the rows read back.
 */
import type { Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { discoverItems, type EmbeddingRow } from '../../lib/batch/job.js';
import { FIXTURES, REPO, tempDir } from './fixtures.js';

const CLI = join(REPO, 'dist', 'lib', 'cli', 'main.js');

export interface CliProcess {
  child: ChildProcess;
  stderr(): string;
  /** Resolves with the exit code (or the signal) once the process has ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first match of `pattern` in stderr, or rejects after `timeoutMs`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
}

/** Starts `perceiver-io ARGS...`; the process is killed on teardown if still running. */
export function startCli(t: Test, args: string[]): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    for (const listener of listeners) listener();
  });
  child.stdout!.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const waitFor = (pattern: RegExp, timeoutMs = 30_000) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        const m = stderr.match(pattern);
        if (!m) return false;
        listeners.delete(check);
        clearTimeout(timer);
        resolve(m);
        return true;
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        reject(new Error(`no ${pattern} on stderr within ${timeoutMs} ms; stderr so far:\n${stderr}`));
      }, timeoutMs);
      listeners.add(check);
      check();
    });
  return { child, stderr: () => stderr, exited, waitFor };
}

/** Runs `perceiver-io ARGS...` to its end. */
export async function runCli(t: Test, args: string[], timeoutMs = 60_000) {
  const started = performance.now();
  const cli = startCli(t, args);
  const timer = setTimeout(() => cli.child.kill('SIGKILL'), timeoutMs);
  const { code, signal } = await cli.exited;
  clearTimeout(timer);
  return { code, signal, stderr: cli.stderr(), seconds: (performance.now() - started) / 1000 };
}

/** `count` small text files in a new folder. */
export async function textFiles(t: Test, count: number): Promise<string> {
  const dir = join(await tempDir(t, 'perceiver-queue-in-'), 'texts');
  await mkdir(dir);
  const words = ['river', 'stone', 'light', 'orbit', 'maple', 'signal', 'copper', 'harbor'];
  for (let i = 0; i < count; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, count - i) }, (_, k) => {
        const n = i + k;
        return writeFile(join(dir, `doc-${String(n).padStart(5, '0')}.txt`), `document ${n}: ${words[n % 8]} ${words[(n * 3) % 8]} ${words[(n * 5 + 1) % 8]}`);
      }),
    );
  }
  return dir;
}

/** Asserts that the rows hold every item of `inputDir` exactly once, and nothing else. */
export async function assertExactlyOnce(t: Test, rows: EmbeddingRow[], inputDir: string): Promise<void> {
  const items = await discoverItems([inputDir]);
  const counts = new Map<string, number>();
  for (const row of rows) counts.set(row.id, (counts.get(row.id) ?? 0) + 1);
  const duplicated = [...counts].filter(([, n]) => n > 1).length;
  const missing = items.filter((item) => !counts.has(item.id)).length;
  const itemIds = new Set(items.map((item) => item.id));
  const extra = rows.filter((row) => !itemIds.has(row.id)).length;
  t.equal(rows.length, items.length, `${items.length} rows for ${items.length} items`);
  t.equal(duplicated, 0, 'no item written twice');
  t.equal(missing, 0, 'no item missing');
  t.equal(extra, 0, 'no row for anything else');
  const pathOf = new Map(items.map((item) => [item.id, item.path]));
  t.ok(
    rows.every((row) => row.path === pathOf.get(row.id)),
    'every row carries the path of its id',
  );
}

export const MODEL = join(FIXTURES, 'text-classification');
/** What the workers of the tests may read and write: the temporary folders and the fixtures. */
export const ROOTS = ['--allow-root', tmpdir(), '--allow-root', FIXTURES];

/**
 * Two workers; the first is SIGKILLed once it has started a shard, or once `killWhen` says so
 * (polled: say, some of its rows are in the output), and the other must take that shard over.
 * With `killWhen` the survivor starts only after the kill, so what `killWhen` sees is the victim's.
 */
export async function twoWorkersOneKilled(t: Test, queue: string, extra: string[], enqueue: string[], killWhen?: () => Promise<boolean>) {
  const args = ['worker', '--queue', queue, '--lock-duration-ms', '2000', ...ROOTS, ...extra];
  const victim = startCli(t, args);
  let survivor = killWhen ? undefined : startCli(t, args);
  await Promise.all([victim, survivor].map((w) => w?.waitFor(/taking shards from/)));
  const enqueuer = startCli(t, enqueue);
  const [, shardId] = await victim.waitFor(/shard (shard-[0-9a-f]+) \(\d+ items, attempt 1\): started/);
  for (const deadline = Date.now() + 30_000; killWhen && !(await killWhen()) && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 20));
  victim.child.kill('SIGKILL');
  t.equal((await victim.exited).signal, 'SIGKILL', 'a worker was killed mid-shard');
  t.notMatch(victim.stderr(), new RegExp(`${shardId}: \\d+ written`), `it died before finishing ${shardId}`);
  survivor ??= startCli(t, args);
  const { code } = await enqueuer.exited;
  t.equal(code, 0, `the enqueuer exits 0 (${enqueuer.stderr().trim().split('\n').at(-1)})`);
  t.match(survivor.stderr(), new RegExp(`${shardId} \\(\\d+ items, attempt 1, taken over after 1 stalled run\\): started`), `the survivor took ${shardId} over`);
  return { survivor, enqueuer };
}
