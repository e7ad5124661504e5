/**
 * LanceDB output (`--out lancedb://DIR/TABLE`, real @lancedb/lancedb 0.31) and `search`: rows
 * equal to the Parquet output of the same inputs; the CLI killed with SIGKILL mid-run several
 * times and rerun leaves every item exactly once; a table of another task is refused; search over
 * a Parquet folder and a LanceDB table finds each file itself first, as a brute-force scan does.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as lancedb from '@lancedb/lancedb';
import { itemId, readEmbeddings, searchIndex } from '../lib/index.js';
import { fixtureDir, relativeErrorOf, tempDir } from './helpers/fixtures.js';
import { CLI_BIN, runCliCommand } from './helpers/child.js';

const MODEL = fixtureDir('text-mlm');

const cli = runCliCommand;

async function texts(dir: string, count: number): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const paths = [];
  for (let i = 0; i < count; i++) {
    const path = join(dir, `${String(i).padStart(4, '0')}.txt`);
    await writeFile(path, `document ${i}: ${'abcdefghij'.slice(0, 1 + (i % 10))} ${i * 7919}`);
    paths.push(path);
  }
  return paths;
}

async function tableRows(dir: string, name: string): Promise<{ id: string; path: string; vector: Float32Array }[]> {
  const db = await lancedb.connect(dir);
  const table = await db.openTable(name);
  const rows = (await table.query().toArray()).map((r: Record<string, unknown>) => ({ id: r.id as string, path: r.path as string, vector: Float32Array.from(r.vector as Iterable<number>) }));
  table.close();
  db.close();
  return rows;
}

t.test('lancedb:// output: the Parquet rows; kill -9 and rerun: every item exactly once; search', async (t) => {
  const dir = await tempDir(t);
  const paths = await texts(join(dir, 'in'), 60);
  const parquetOut = join(dir, 'parquet');
  const lanceDir = join(dir, 'db');
  const reference = await cli(['embed', '--model', MODEL, '--out', parquetOut, '--batch-size', '8', join(dir, 'in')]);
  t.equal(reference.code, 0, reference.stderr);
  const expected = new Map((await readEmbeddings(parquetOut)).map((r) => [r.id, r]));

  const args = ['embed', '--model', MODEL, '--out', `lancedb://${lanceDir}/docs`, '--batch-size', '1', join(dir, 'in')];
  // Killed once the table has this many more commits (versions) than before: mid-run, between
  // and during inserts.
  const versions = async () => (await readdir(join(lanceDir, 'docs.lance', '_versions')).catch(() => [])).length;
  for (const more of [3, 8, 12]) {
    const before = await versions();
    const child = spawn(process.execPath, [CLI_BIN, ...args], { stdio: 'ignore' });
    t.teardown(() => void child.kill('SIGKILL'));
    const closed = new Promise((resolve) => child.on('close', resolve));
    for (let waited = 0; waited < 30_000 && (await versions()) < before + more; waited += 5) await new Promise((resolve) => setTimeout(resolve, 5));
    child.kill('SIGKILL');
    await closed;
  }
  const partial = await tableRows(lanceDir, 'docs').catch(() => []);
  t.ok(partial.length > 0 && partial.length < 60, `the kills came mid-run (${partial.length} rows)`);
  t.equal(new Set(partial.map((r) => r.id)).size, partial.length, `after 3 kills: ${partial.length} rows, none twice`);
  const rerun = await cli(args);
  t.equal(rerun.code, 0, `the rerun exits 0 (${rerun.stderr.trim().split('\n').pop()})`);
  t.match(rerun.stderr, new RegExp(`60 items: ${60 - partial.length} written in \\d+ parts, ${partial.length} already done`));
  const rows = await tableRows(lanceDir, 'docs');
  t.equal(rows.length, 60, '60 rows');
  t.same(new Set(rows.map((r) => r.id)), new Set(paths.map((p) => itemId(p))), 'every item exactly once');
  t.ok(rows.every((r) => relativeErrorOf(r.vector, expected.get(r.id)!.embedding) < 1e-6 && r.path === expected.get(r.id)!.path), 'the same rows as the Parquet output');
  const again = await cli(args);
  t.match(again.stderr, /60 items: 0 written in 0 parts, 60 already done/);

  // Another task into the table: refused.
  const classify = await cli(['classify', '--model', fixtureDir('text-classification'), '--out', `lancedb://${lanceDir}/docs`, paths[0]!]);
  t.equal(classify.code, 1);
  t.match(classify.stderr, /holds embed rows of width 64, not classify/);
  const badOut = await cli(['embed', '--model', MODEL, '--out', 'lancedb://only-a-name', paths[0]!]);
  t.equal(badOut.code, 2);
  t.match(badOut.stderr, /lancedb:\/\/DIR\/TABLE/);
  // No credentials anywhere in the AWS chain: one line, exit 1, not a local folder named "s3:".
  const noCredentials = { AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '', AWS_CONFIG_FILE: '/nonexistent', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent', AWS_EC2_METADATA_DISABLED: 'true' };
  const s3Out = await cli(['embed', '--model', MODEL, '--out', 's3://bucket/out', paths[0]!], noCredentials);
  t.equal(s3Out.code, 1, 'an s3:// output without credentials fails');
  t.match(s3Out.stderr, /cannot use s3:\/\/bucket\/out as the output: cannot list s3:\/\/bucket\/out\/: CredentialsProviderError/);
  t.notOk(existsSync('s3:'), 'and is not made a local folder');

  // Search, from code and through the CLI, on both outputs.
  for (const index of [parquetOut, `lancedb://${lanceDir}/docs`]) {
    for (const probe of [3, 41]) {
      const query = expected.get(itemId(paths[probe]!))!.embedding;
      const hits = await searchIndex(index, query, 5);
      t.equal(hits.length, 5, `${index}: k hits`);
      t.equal(hits[0]!.path, paths[probe], `${index}: the file itself first`);
      t.ok(Math.abs(hits[0]!.score - 1) < 1e-4, `${index}: with similarity 1 (${hits[0]!.score})`);
      t.ok(hits.every((h, i) => i === 0 || h.score <= hits[i - 1]!.score + 1e-6), `${index}: best first`);
    }
    const run = await cli(['search', '--index', index, '--query', paths[7]!, '-k', '3', '--json']);
    t.equal(run.code, 0, run.stderr);
    const lines = run.stdout.trim().split('\n').map((l) => JSON.parse(l));
    t.equal(lines.length, 3);
    t.equal(lines[0].path, paths[7], `${index}: CLI search finds the query file first`);
  }
  // The two agree on the top 5 for a text query.
  const scanTop = (await cli(['search', '--index', parquetOut, '--query', 'document 12', '-k', '5', '--json'])).stdout;
  const lanceTop = (await cli(['search', '--index', `lancedb://${lanceDir}/docs`, '--query', 'document 12', '-k', '5', '--json'])).stdout;
  t.same(lanceTop.trim().split('\n').map((l) => JSON.parse(l).path), scanTop.trim().split('\n').map((l) => JSON.parse(l).path), 'LanceDB search and the Parquet scan agree');
  const none = await cli(['search', '--index', join(dir, 'empty'), '--query', 'x']);
  t.equal(none.code, 2);
  t.match(none.stderr, /holds no rows to search/);
});

t.test('lancedb:// with --id content: duplicates once, listed under every path; path ids into it refused', async (t) => {
  const dir = await tempDir(t);
  const paths = await texts(join(dir, 'in'), 4);
  await writeFile(join(dir, 'in', 'copy-of-1.txt'), await readFile(paths[1]!));
  const out = `lancedb://${join(dir, 'db')}/content`;
  const run = await cli(['embed', '--model', MODEL, '--out', out, '--id', 'content', join(dir, 'in')]);
  t.equal(run.code, 0, run.stderr);
  t.match(run.stderr, /4 items: 4 written/);
  const db = await lancedb.connect(join(dir, 'db'));
  const table = await db.openTable('content');
  const rows = (await table.query().select(['id', 'path', 'paths']).toArray()) as { id: string; path: string; paths: Iterable<string> }[];
  table.close();
  db.close();
  t.equal(rows.length, 4);
  const dup = rows.find((r) => r.path === paths[1]);
  t.same(dup && [...dup.paths], [join(dir, 'in', '0001.txt'), join(dir, 'in', 'copy-of-1.txt')], 'the duplicate lists both paths');
  const mixed = await cli(['embed', '--model', MODEL, '--out', out, join(dir, 'in')]);
  t.equal(mixed.code, 1);
  t.match(mixed.stderr, /holds content ids, not path ids: use --id content/);
});
