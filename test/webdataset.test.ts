/**
 * WebDataset tar shards as inputs: real tar files written with tar-stream, read locally and from
 * s3rver on 127.0.0.1; members with a media extension are items (`SHARD.tar#MEMBER`), others are
 * skipped; every row is checked against the model on the member's text alone; content ids across
 * shards; reading members out of the shard's order with a tiny buffer does not hang; a broken
 * shard is a clear error.
 */
import t from 'tap';
import { writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import tar from 'tar-stream';
import { AutoModel, itemId, readEmbeddings } from '../lib/index.js';
import { RemoteReader } from '../lib/io/remote.js';
import { listShardMembers, ShardMemberReader } from '../lib/batch/webdataset.js';
import { fixtureDir, relativeErrorOf, tempDir } from './helpers/fixtures.js';
import { startS3 } from './helpers/s3.js';
import { runCliCommand } from './helpers/child.js';
import { embeddingOfText } from './helpers/embedding.js';

const MODEL = fixtureDir('text-mlm');
const model = await AutoModel.fromPretrained(MODEL);
t.teardown(() => model.dispose());

/** A WebDataset shard: per sample a .txt (media) and a .json (metadata, not media). */
async function shard(texts: string[], first: number): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk) => void chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve) => pack.on('end', () => resolve()));
  texts.forEach((text, i) => {
    const key = String(first + i).padStart(6, '0');
    pack.entry({ name: `${key}.txt` }, text);
    pack.entry({ name: `${key}.json` }, JSON.stringify({ key }));
  });
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

const cli = runCliCommand;

const embeddingOf = (dir: string, text: string): Promise<Float32Array> => embeddingOfText(model, dir, text);

t.test('local and S3 shards through the CLI: every media member once, as the model gives it; resume', async (t) => {
  const dir = await tempDir(t);
  const s3 = await startS3(t);
  await s3.createBucket('wds');
  const textsA = Array.from({ length: 5 }, (_, i) => `local shard sample ${i}`);
  const textsB = Array.from({ length: 6 }, (_, i) => `s3 shard one sample ${i}`);
  const textsC = Array.from({ length: 4 }, (_, i) => `s3 shard two sample ${i}`);
  await writeFile(join(dir, 'local-000.tar'), await shard(textsA, 0));
  await s3.put('wds', 'shards/train-000.tar', await shard(textsB, 0));
  await s3.put('wds', 'shards/train-001.tar', await shard(textsC, 6));

  const out = join(dir, 'out');
  const args = ['embed', '--model', MODEL, '--out', out, '--s3-endpoint', s3.endpoint, '--batch-size', '4', join(dir, 'local-000.tar'), 's3://wds/shards/'];
  const first = await cli(args);
  t.equal(first.code, 0, `exit 0 (${first.stderr.trim().split('\n').pop()})`);
  t.match(first.stderr, /15 items: 15 written/, '5 + 6 + 4 .txt members; the .json members are not media');
  const rows = await readEmbeddings(out);
  const expected = new Map<string, string>([
    ...textsA.map((text, i) => [`${join(dir, 'local-000.tar')}#${String(i).padStart(6, '0')}.txt`, text] as [string, string]),
    ...textsB.map((text, i) => [`s3://wds/shards/train-000.tar#${String(i).padStart(6, '0')}.txt`, text] as [string, string]),
    ...textsC.map((text, i) => [`s3://wds/shards/train-001.tar#${String(6 + i).padStart(6, '0')}.txt`, text] as [string, string]),
  ]);
  t.same(rows.map((r) => r.path).sort(), [...expected.keys()].sort(), 'one row per media member');
  for (const row of rows) {
    t.equal(row.id, itemId(row.path), `${row.path}: id of its path`);
    t.ok(relativeErrorOf(row.embedding, await embeddingOf(dir, expected.get(row.path)!)) < 1e-5, `${row.path}: the embedding of its text`);
  }
  const rerun = await cli(args);
  t.match(rerun.stderr, /15 items: 0 written in 0 parts, 15 already done/, 'a rerun does nothing');

  // Content ids: a third shard repeating two texts of the first is embedded only for its new text.
  const contentOut = join(dir, 'content');
  await writeFile(join(dir, 'local-001.tar'), await shard([textsA[0]!, textsA[1]!, 'a new text'], 100));
  const content = await cli(['embed', '--model', MODEL, '--out', contentOut, '--id', 'content', join(dir, 'local-000.tar'), join(dir, 'local-001.tar')]);
  t.equal(content.code, 0, content.stderr);
  t.match(content.stderr, /6 items: 6 written/, '8 members, 6 distinct texts');
  const contentRows = await readEmbeddings(contentOut);
  const dup = contentRows.find((r) => r.id === createHash('sha256').update(textsA[0]!).digest('hex'));
  t.same(dup?.paths, [`${join(dir, 'local-000.tar')}#000000.txt`, `${join(dir, 'local-001.tar')}#000100.txt`], 'the duplicate member is listed under both shards');

  // A file named .tar that is not one.
  await writeFile(join(dir, 'broken.tar'), 'this is not a tar archive at all, just text that is long enough'.repeat(20));
  const broken = await cli(['embed', '--model', MODEL, '--out', join(dir, 'broken-out'), join(dir, 'broken.tar')]);
  t.equal(broken.code, 2);
  t.match(broken.stderr, /broken\.tar.*not a readable tar shard/);
});

t.test('members asked for out of order with a tiny buffer: every one arrives, nothing hangs', async (t) => {
  const dir = await tempDir(t);
  const texts = Array.from({ length: 12 }, (_, i) => `sample ${i} `.repeat(50));
  const file = join(dir, 'shard.tar');
  await writeFile(file, await shard(texts, 0));
  const reader = new RemoteReader();
  t.teardown(() => reader.close());
  const members = (await listShardMembers(file, () => reader)).map((m) => m.path);
  t.equal(members.length, 12);
  const wanted = new Set(members);
  const members64 = new ShardMemberReader(() => reader, wanted, 64);
  const reversed = [...members].reverse();
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('hung')), 10_000).unref());
  const got = await Promise.race([Promise.all(reversed.map((m) => members64.read(m))), timeout]);
  t.same(got.map((b) => b.toString()), [...texts].reverse(), 'each member, in the order asked');
  await t.rejects(members64.read(`${file}#999999.txt`), /no such member in the shard/);
  members64.close();
});
