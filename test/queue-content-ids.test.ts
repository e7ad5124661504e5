/**
 * `embed --queue --id content`: ids are the SHA-256 of the bytes (read by the enqueuer while it
 * discovers), a worker SIGKILLed mid-shard is taken over (every item once), duplicate files are
 * embedded once and listed under every path, a moved collection is not embedded again, an edited
 * file is, and a folder of content ids refuses path ids.
 */
import t from 'tap';
import { cp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readEmbeddings } from '../lib/batch/job.js';
import { tempDir } from './helpers/fixtures.js';
import { MODEL, runCli, textFiles, twoWorkersOneKilled } from './helpers/queue-cli.js';
import { startRedis } from './helpers/redis.js';

const redis = await startRedis(t);

t.test('--id content with --queue: duplicates once under every path, a moved collection is not redone, an edited file is', async (t) => {
  const inputDir = await textFiles(t, 120);
  // Ten files with the bytes of others.
  for (let i = 0; i < 10; i++) await cp(join(inputDir, `doc-${String(i).padStart(5, '0')}.txt`), join(inputDir, `copy-${i}.txt`));
  const out = join(await tempDir(t, 'perceiver-queue-out-'), 'content');
  const enqueue = (dir: string) => ['embed', '--queue', redis.url, '--model', MODEL, '--out', out, '--id', 'content', '--shard-size', '60', '--batch-size', '1', dir];
  // --part-size 0 first: the shards' parts stay; the rerun below merges them.
  const { survivor, enqueuer } = await twoWorkersOneKilled(t, redis.url, [], [...enqueue(inputDir), '--part-size', '0']);
  t.match(enqueuer.stderr(), /120 items: 120 written by 2 shards/, '130 files, 120 distinct contents');
  const rows = await readEmbeddings(out);
  const counts = new Map<string, number>();
  for (const row of rows) counts.set(row.id, (counts.get(row.id) ?? 0) + 1);
  t.equal(rows.length, 120, '120 rows');
  t.ok([...counts.values()].every((n) => n === 1), 'none twice');
  const copied = rows.filter((row) => (row.paths ?? []).length === 2);
  t.equal(copied.length, 10, 'the ten duplicated contents list both paths');
  const pairOf = (row: { paths?: string[] }) => row.paths!.map((p) => p.split('/').at(-1)!).sort();
  t.ok(copied.every((row) => { const [copy, doc] = pairOf(row); return copy === `copy-${Number(/doc-(\d+)/.exec(doc!)?.[1])}.txt`; }), 'each with its copy');

  const moved = `${inputDir}-moved`;
  await rename(inputDir, moved);
  const again = await runCli(t, enqueue(moved));
  t.equal(again.code, 0);
  t.match(again.stderr, /120 items: 0 written by 0 shards \(0 queued now\), 120 already done.* \(1 compacted part\)/, 'a moved collection is not embedded again; the rerun merges the parts');
  t.same((await readdir(out)).filter((n) => n.endsWith('.parquet')).map((n) => n.replace(/-.*/, '')), ['compact'], 'into one');
  t.equal((await readEmbeddings(out)).length, 120, 'with every row once');
  await writeFile(join(moved, 'doc-00042.txt'), 'an edited document');
  await rm(join(moved, 'copy-3.txt'));
  const edited = await runCli(t, enqueue(moved));
  t.equal(edited.code, 0);
  t.match(edited.stderr, /120 items: 1 written by 1 shard \(1 queued now\), 119 already done/, 'an edited file is embedded again');
  const last = await readEmbeddings(out);
  t.ok(last.some((row) => row.path === join(moved, 'doc-00042.txt')), 'under its new content');

  const mixed = await runCli(t, ['embed', '--queue', redis.url, '--model', MODEL, '--out', out, '--shard-size', '30', moved]);
  t.equal(mixed.code, 1, 'path ids into a folder of content ids: refused');
  t.match(mixed.stderr, /holds parts with content ids .* use --id content/);
  survivor.child.kill('SIGTERM');
  t.equal((await survivor.exited).code, 0);
});
