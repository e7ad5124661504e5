/**
 * `embed --queue --out lancedb://DIR/TABLE` (real @lancedb/lancedb): each batch of a shard is one
 * insert-if-absent, so a worker SIGKILLed in the middle of a shard (some batches in the table) and
 * the shard redone by another leaves every item exactly once; the enqueuer optimizes the table once
 * the queue holds no shard of it; a rerun finds every item there.
 */
import t from 'tap';
import { join } from 'node:path';
import * as lancedb from '@lancedb/lancedb';
import { itemId } from '../lib/index.js';
import { tempDir } from './helpers/fixtures.js';
import { assertExactlyOnce, MODEL, runCli, textFiles, twoWorkersOneKilled } from './helpers/queue-cli.js';
import { startRedis } from './helpers/redis.js';

const redis = await startRedis(t);

t.test('lancedb:// output with --queue: one insert-if-absent per batch, a killed worker\'s shard redone, every item once', async (t) => {
  const inputDir = await textFiles(t, 160);
  const dir = join(await tempDir(t, 'perceiver-queue-out-'), 'db');
  const enqueue = ['embed', '--queue', redis.url, '--model', MODEL, '--out', `lancedb://${dir}/items`, '--shard-size', '80', '--batch-size', '2', inputDir];
  // Killed once some of its batches are in the table (the survivor starts after the kill).
  const rowsNow = async () => {
    const db = await lancedb.connect(dir);
    try {
      if (!(await db.tableNames()).includes('items')) return 0;
      const table = await db.openTable('items');
      const count = await table.countRows();
      table.close();
      return count;
    } finally {
      db.close();
    }
  };
  const { survivor, enqueuer } = await twoWorkersOneKilled(t, redis.url, [], enqueue, async () => (await rowsNow()) >= 6);
  t.match(enqueuer.stderr(), /merging the table's fragments/, 'the enqueuer optimizes the table at the end');
  const skipped = [...survivor.stderr().matchAll(/(\d+) already in other parts/g)].reduce((n, m) => n + Number(m[1]), 0);
  t.ok(skipped > 0, `the survivor left out the rows the killed worker had inserted (${skipped})`);
  const db = await lancedb.connect(dir);
  const table = await db.openTable('items');
  const rows = (await table.query().select(['id', 'path']).toArray()) as { id: string; path: string }[];
  table.close();
  db.close();
  await assertExactlyOnce(t, rows.map((r) => ({ id: r.id, path: r.path, embedding: new Float32Array(0) })), inputDir);
  t.ok(rows.every((r) => r.id === itemId(r.path)), 'ids are the hashes of the paths');

  const again = await runCli(t, enqueue);
  t.equal(again.code, 0);
  t.match(again.stderr, /160 items: 0 written by 0 shards \(0 queued now\), 160 already done/, 'a rerun finds every item in the table');
  survivor.child.kill('SIGTERM');
  t.equal((await survivor.exited).code, 0);
});
