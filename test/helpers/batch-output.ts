/** What the batch-output tests (compaction, S3 output) share: numbered text inputs, and the exactly-once check. */
import type { Test } from 'tap';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { EmbeddingRow } from '../../lib/index.js';

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
  const counts = new Map<string, number>();
  for (const row of rows) counts.set(row.id, (counts.get(row.id) ?? 0) + 1);
  t.equal(rows.length, ids.length, `${what}: ${ids.length} rows`);
  t.ok(ids.every((id) => counts.get(id) === 1), `${what}: every item exactly once`);
}
