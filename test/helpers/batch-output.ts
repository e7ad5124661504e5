/** What the batch-output tests (compaction, S3 output) share: numbered text inputs, a CLI run killed mid-way, and the exactly-once checks. */
import type { Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { EmbeddingRow } from '../../lib/index.js';
import { CLI_BIN } from './child.js';

/** `count` text files 0000.txt... in `dir` (made if missing), each a different sentence; their paths. */
export async function writeTexts(dir: string, count: number, prefix = 'text'): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const paths = [];
  for (let i = 0; i < count; i++) {
    const path = join(dir, `${String(i).padStart(4, '0')}.txt`);
    await writeFile(path, `${prefix} number ${i}, with some words to embed`);
    paths.push(path);
  }
  return paths;
}

/** Every id in `ids` is in `rows` exactly once, and there are no other rows. */
export function assertEachOnce(t: Test, rows: EmbeddingRow[], ids: string[], what: string): void {
  const counts = rowsPerId(rows);
  t.equal(rows.length, ids.length, `${what}: ${ids.length} rows`);
  t.ok(ids.every((id) => counts.get(id) === 1), `${what}: every item exactly once`);
}

/**
 * Runs the CLI with `args` and kills it (SIGKILL) once `names()` (the output's file or object
 * names) shows `afterParts` parts, a pending compaction intent counting 3 (it is about to merge
 * them), or after 30 s; resolves when the process has exited.
 */
export async function runCliKilledAfterParts(t: Test, args: string[], afterParts: number, names: () => Promise<string[]>, pollMs: number): Promise<void> {
  const child = spawn(process.execPath, [CLI_BIN, ...args], { stdio: 'ignore' });
  t.teardown(() => void child.kill('SIGKILL'));
  const closed = new Promise((resolve) => child.on('close', resolve));
  for (let waited = 0; waited < 30_000; waited += pollMs) {
    const now = await names();
    if (now.filter((n) => n.endsWith('.parquet')).length + now.filter((n) => n.startsWith('.compact-')).length * 3 >= afterParts) break;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  child.kill('SIGKILL');
  await closed;
}

/** How many rows hold each id. */
export function rowsPerId(rows: EmbeddingRow[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const row of rows) counts.set(row.id, (counts.get(row.id) ?? 0) + 1);
  return counts;
}
