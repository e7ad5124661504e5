/**
 * Remote inputs of the batch job, against real servers on 127.0.0.1: s3rver (an S3-compatible
 * server, through the AWS SDK with --s3-endpoint and the credential chain from the environment)
 * and a node:http server that answers some requests with 503, 404 or never. Manifests as lines,
 * CSV, JSONL and Parquet, local and on S3. Every row is checked against the model run here on the
 * same text; failures are isolated, counted and reported; retries, timeouts and the concurrency
 * bound are observed on the server side.
 */
import t, { type Test } from 'tap';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AutoModel, itemId, readEmbeddings, type EmbeddingRow } from '../lib/index.js';
import { RemoteReader } from '../lib/io/remote.js';
import { embeddingTable, parquetBytes } from '../lib/batch/parquet.js';
import { fixtureDir, relativeErrorOf, tempDir } from './helpers/fixtures.js';
import { startS3 } from './helpers/s3.js';
import { runCliCommand } from './helpers/child.js';
import { embeddingOfText } from './helpers/embedding.js';

const MODEL = fixtureDir('text-mlm');
const model = await AutoModel.fromPretrained(MODEL);
t.teardown(() => model.dispose());

const cli = runCliCommand;

const embeddingOf = (dir: string, text: string): Promise<Float32Array> => embeddingOfText(model, dir, text);

interface HttpLog {
  requests: Map<string, number>;
  inFlight: number;
  maxInFlight: number;
}

async function startHttp(t: Test, texts: Map<string, string>): Promise<{ base: string; log: HttpLog }> {
  const log: HttpLog = { requests: new Map(), inFlight: 0, maxInFlight: 0 };
  const hanging: ServerResponse[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '/';
    const count = (log.requests.get(path) ?? 0) + 1;
    log.requests.set(path, count);
    log.inFlight++;
    log.maxInFlight = Math.max(log.maxInFlight, log.inFlight);
    res.on('close', () => log.inFlight--);
    if (path === '/slow.txt') return void hanging.push(res); // never answers
    if (path === '/flaky.txt' && count <= 2) return void res.writeHead(503).end('busy');
    const text = texts.get(path);
    // A little latency, so that concurrent requests overlap on the server.
    setTimeout(() => (text === undefined ? res.writeHead(404).end('no') : res.writeHead(200, { 'content-type': 'text/plain' }).end(text)), 20);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const res of hanging) res.destroy();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  const { port } = server.address() as { port: number };
  return { base: `http://127.0.0.1:${port}`, log };
}

function byPath(rows: EmbeddingRow[]): Map<string, EmbeddingRow[]> {
  const map = new Map<string, EmbeddingRow[]>();
  for (const row of rows) map.set(row.path, [...(map.get(row.path) ?? []), row]);
  return map;
}

t.test('s3:// prefixes, http URLs and manifests (lines, CSV, JSONL, Parquet; local and on S3) through the CLI', async (t) => {
  const dir = await tempDir(t);
  const s3 = await startS3(t);
  await s3.createBucket('media');
  const s3Texts = new Map<string, string>();
  for (let i = 0; i < 7; i++) s3Texts.set(`texts/${i}.txt`, `object ${i} stored in the bucket`);
  for (const [key, text] of s3Texts) await s3.put('media', key, text);
  await s3.put('media', 'texts/readme.bin', 'not media: left out of the prefix');
  await s3.put('media', 'other/9.txt', 'named by the S3 manifest');
  // A JSONL manifest on S3 naming an object relative to itself and one absolute.
  await s3.put('media', 'lists/list.jsonl', `{"url": "../other/9.txt"}\n{"path": "s3://media/texts/0.txt"}\n`);

  const httpTexts = new Map<string, string>([
    ['/a.txt', 'served over http, a'],
    ['/b.txt', 'served over http, b'],
    ['/c.txt', 'served over http, c'],
    ['/flaky.txt', 'served after two 503s'],
    ['/p.txt', 'named by the parquet manifest'],
  ]);
  const { base, log } = await startHttp(t, httpTexts);
  await writeFile(join(dir, 'urls.csv'), `id,url\n1,${base}/a.txt\n2,"${base}/b.txt"\n3,${base}/flaky.txt\n4,${base}/missing.txt\n5,${base}/slow.txt\n`);
  // A Parquet manifest written with the project's own writer's libraries: a table with a url column.
  const { arrow } = await (await import('../lib/batch/parquet.js')).parquetLibraries();
  await writeFile(join(dir, 'urls.parquet'), await parquetBytes(arrow.tableFromArrays({ url: [`${base}/p.txt`, `${base}/c.txt`] }) as never));
  void embeddingTable;

  const out = join(dir, 'out');
  const common = ['--model', MODEL, '--out', out, '--s3-endpoint', s3.endpoint, '--request-timeout-ms', '400', '--read-attempts', '3', '--concurrency', '2', '--batch-size', '4'];
  const first = await cli(['embed', ...common, '--manifest', join(dir, 'urls.csv'), 's3://media/texts/', `${base}/c.txt`]);
  t.equal(first.code, 0, `exit 0 (${first.stderr.trim().split('\n').pop()})`);
  // 7 S3 texts + a, b, flaky, missing, slow, c = 13 items; missing and slow fail.
  t.match(first.stderr, /13 items: 11 written in \d+ parts?, 0 already done, 2 unreadable, 0 left/);
  t.match(first.stderr, new RegExp(`skipped: cannot decode ${base}/missing.txt: cannot read it: HTTP 404`), 'a 404 is reported, once');
  t.match(first.stderr, new RegExp(`skipped: cannot decode ${base}/slow.txt: cannot read it after 3 attempts: no answer within 400 ms`), 'a server that never answers times out, 3 tries');
  t.equal(log.requests.get('/missing.txt'), 1, 'a 404 is not retried');
  t.equal(log.requests.get('/slow.txt'), 3, 'a timeout is retried up to --read-attempts');
  t.equal(log.requests.get('/flaky.txt'), 3, 'two 503s, then the answer');
  t.ok(log.maxInFlight <= 2, `at most --concurrency 2 requests at once on the server (saw ${log.maxInFlight})`);

  // Second run: a Parquet manifest (p.txt new, c.txt done) and the JSONL manifest on S3.
  const second = await cli(['embed', ...common, '--manifest', join(dir, 'urls.parquet')]);
  t.equal(second.code, 0, second.stderr);
  t.match(second.stderr, /2 items: 1 written in 1 part, 1 already done/);
  const third = await cli(['embed', ...common, '--manifest', 's3://media/lists/list.jsonl']);
  t.equal(third.code, 0, third.stderr);
  t.match(third.stderr, /2 items: 1 written in 1 part, 1 already done/, 'relative to the manifest\'s key; texts/0.txt already done');

  const rows = await readEmbeddings(out);
  const paths = byPath(rows);
  const expected = new Map<string, string>([
    ...[...s3Texts].map(([key, text]) => [`s3://media/${key}`, text] as [string, string]),
    ['s3://media/other/9.txt', 'named by the S3 manifest'],
    ...[...httpTexts].map(([path, text]) => [`${base}${path}`, text] as [string, string]),
  ]);
  t.equal(rows.length, expected.size, `${expected.size} rows`);
  for (const [url, text] of expected) {
    const found = paths.get(url) ?? [];
    t.equal(found.length, 1, `${url}: exactly one row`);
    if (found.length !== 1) continue;
    t.equal(found[0]!.id, itemId(url), `${url}: the id is the hash of the URL`);
    t.ok(relativeErrorOf(found[0]!.embedding, await embeddingOf(dir, text)) < 1e-5, `${url}: the embedding of its bytes`);
  }

  // A rerun over the same inputs does nothing, and S3 errors are per item too.
  const rerun = await cli(['embed', ...common, '--manifest', join(dir, 'urls.csv'), 's3://media/texts/', `${base}/c.txt`]);
  t.match(rerun.stderr, /13 items: 0 written in 0 parts, 11 already done, 2 unreadable/);
  await writeFile(join(dir, 'gone.txt'), 's3://media/texts/none.txt\ns3://nobucket/x.txt\n');
  const gone = await cli(['embed', ...common, '--manifest', join(dir, 'gone.txt')]);
  t.equal(gone.code, 0);
  t.match(gone.stderr, /skipped: cannot decode s3:\/\/media\/texts\/none.txt: cannot read it: NoSuchKey/);
  t.match(gone.stderr, /skipped: cannot decode s3:\/\/nobucket\/x.txt: cannot read it: NoSuchBucket/);
  t.match(gone.stderr, /2 items: 0 written .* 2 unreadable/);

  // Command-line mistakes.
  const empty = await cli(['embed', ...common, 's3://media/nothing-here/']);
  t.equal(empty.code, 2);
  t.match(empty.stderr, /no media objects under s3:\/\/media\/nothing-here\//);
  const badEndpoint = await cli(['embed', ...common.filter((a) => a !== s3.endpoint && a !== '--s3-endpoint'), '--s3-endpoint', 'ftp://x', 's3://media/texts/']);
  t.equal(badEndpoint.code, 2);
  t.match(badEndpoint.stderr, /--s3-endpoint/);
  await writeFile(join(dir, 'nocol.csv'), 'name\nx\n');
  const noColumn = await cli(['embed', ...common, '--manifest', join(dir, 'nocol.csv')]);
  t.equal(noColumn.code, 2);
  t.match(noColumn.stderr, /has no path\/url\/uri\/key column \(columns: name\)/);
});

t.test('RemoteReader: a refused connection is retried and then fails as one item; bytes over the limit are refused', async (t) => {
  const reader = new RemoteReader({ attempts: 2, backoffMs: 1, timeoutMs: 500, maxBytes: 10 });
  t.teardown(() => reader.close());
  // A port nothing listens on: take a free one and close it.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  await t.rejects(reader.read(`http://127.0.0.1:${port}/x.txt`), /cannot read it after 2 attempts: ECONNREFUSED/);
  const { base } = await startHttp(t, new Map([['/big.txt', 'more than ten bytes']]));
  await t.rejects(reader.read(`${base}/big.txt`), /over the limit of 10/);
  t.throws(() => new RemoteReader({ concurrency: 0 }), /concurrency/);
  await t.rejects(reader.read('ftp://x/y'), /an http\(s\):\/\/ or s3:\/\/ URL/);
});
