/**
 * Temporary files are never a way to write somewhere else: every writer (safetensors, which
 * `infer --output` uses; `convert`; Parquet parts; Hub downloads) creates its temporary file
 * exclusively (O_EXCL | O_NOFOLLOW) under an unpredictable name. A symlink planted at any name an
 * attacker could predict (the old `<target>.tmp-<pid>` for the next pids, the partial download) is
 * never followed, and a planted link at the very name drawn makes the open fail, not write.
 */
import t, { type Test } from 'tap';
import { lstat, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readSafetensors, Tensor, writeSafetensors } from '../lib/index.js';
import { createTempFile, tempPathFor, writeFileAtomic } from '../lib/io/temp_file.js';
import { writeEmbeddingPart } from '../lib/batch/parquet.js';
import { readEmbeddings } from '../lib/batch/job.js';
import { runConvert } from '../lib/cli/convert.js';
import { snapshotDownload } from '../lib/hub/download.js';
import { fixtureDir, tempDir } from './helpers/fixtures.js';
import { HubServer, sha256 } from './helpers/hub-server.js';

const VICTIM_TEXT = 'precious: must never change\n';

/** A file outside the output folder, and links to it at the names the old code would have used for the next pids. */
async function plantLinks(dir: string, target: string): Promise<{ victim: string; links: string[] }> {
  const victim = join(dir, 'victim.txt');
  await writeFile(victim, VICTIM_TEXT);
  const links: string[] = [];
  for (let pid = process.pid - 5; pid < process.pid + 50; pid++) {
    for (const name of [`${target}.tmp-${pid}`, `${target}.${pid}.tmp`]) {
      await symlink(victim, name);
      links.push(name);
    }
  }
  return { victim, links };
}

async function assertUntouched(t: Test, victim: string, links: string[]): Promise<void> {
  t.equal(await readFile(victim, 'utf8'), VICTIM_TEXT, 'the file the links point at is unchanged');
  let intact = 0;
  for (const link of links) if ((await lstat(link)).isSymbolicLink() && (await readlink(link)) === victim) intact++;
  t.equal(intact, links.length, 'every planted link is still there, untouched');
}

t.test('temporary names: random (128 bits), hidden, beside the target; never the same twice', async (t) => {
  const names = new Set(Array.from({ length: 2000 }, () => tempPathFor('/out/model.safetensors', 'host.42')));
  t.equal(names.size, 2000, '2000 draws, 2000 names');
  for (const name of [...names].slice(0, 5)) t.match(name, /^\/out\/\.model\.safetensors\.host\.42\.[0-9a-f]{32}\.tmp$/);
});

t.test('a link planted at the exact name drawn fails the open (EEXIST) instead of being followed', async (t) => {
  const dir = await tempDir(t);
  const victim = join(dir, 'victim.txt');
  await writeFile(victim, VICTIM_TEXT);
  const target = join(dir, 'out.bin');
  // Predict every name: randomBytes returns the same bytes each time, and a link is planted there.
  const fixed = Buffer.alloc(16, 0xab);
  const mocked = await t.mockImport<typeof import('../lib/io/temp_file.js')>('../lib/io/temp_file.js', {
    'node:crypto': { randomBytes: () => fixed },
  });
  const predicted = mocked.tempPathFor(target);
  await symlink(victim, predicted);
  const error = await mocked.writeFileAtomic(target, 'attacker-chosen destination?').catch((e: unknown) => e);
  t.equal((error as NodeJS.ErrnoException).code, 'EEXIST', 'the write fails with EEXIST');
  t.equal(await readFile(victim, 'utf8'), VICTIM_TEXT, 'the victim is unchanged');
  t.ok((await lstat(predicted)).isSymbolicLink(), 'the planted link is left as it was');
  t.same((await readdir(dir)).sort(), [predicted.split('/').at(-1), 'victim.txt'].sort(), 'no target written');

  // A dangling link (to a file that does not exist yet) is not followed either: O_EXCL refuses it.
  const dangling = join(dir, 'would-be-created.txt');
  const other = mocked.tempPathFor(join(dir, 'second.bin'));
  await symlink(dangling, other);
  await t.rejects(mocked.createTempFile(join(dir, 'second.bin')), { code: 'EEXIST' });
  await t.rejects(lstat(dangling), { code: 'ENOENT' }, 'nothing created through the dangling link');
});

t.test('writeFileAtomic replaces the target whole, and a symlink at the target is replaced, not followed', async (t) => {
  const dir = await tempDir(t);
  const victim = join(dir, 'victim.txt');
  await writeFile(victim, VICTIM_TEXT);
  const target = join(dir, 'out.txt');
  await symlink(victim, target);
  await writeFileAtomic(target, 'new content');
  t.equal(await readFile(victim, 'utf8'), VICTIM_TEXT, 'the link target is unchanged');
  t.notOk((await lstat(target)).isSymbolicLink(), 'the target is now a plain file');
  t.equal(await readFile(target, 'utf8'), 'new content');
  t.same((await readdir(dir)).sort(), ['out.txt', 'victim.txt'], 'no temporary file left');
  const temp = await createTempFile(join(dir, 'y'));
  t.teardown(() => temp.handle.close().catch(() => {}));
  t.equal(((await lstat(temp.path)).mode & 0o777) & ~0o666, 0, 'created with at most 0666');
});

t.test('writeSafetensors (infer --output), convert and Parquet parts never follow planted links', async (t) => {
  const dir = await tempDir(t);
  const out = join(dir, 'out.safetensors');
  const planted = await plantLinks(dir, out);
  const tensor = Tensor.from('float32', [1, 2, 3, 4], [2, 2]);
  await writeSafetensors(out, { x: tensor });
  await assertUntouched(t, planted.victim, planted.links);
  t.same(Array.from((await readSafetensors(out)).tensors.get('x')!.data as Float32Array), [1, 2, 3, 4], 'the output was written');

  const converted = join(dir, 'converted');
  await mkdir(converted);
  const convertedLinks = await plantLinks(converted, join(converted, 'model.safetensors'));
  const configLinks = await plantLinks(join(dir), join(converted, 'config.json'));
  // convert copies config.json next to the weights: a link planted at that name is replaced, not written through.
  const configVictim = join(dir, 'config-victim.json');
  await writeFile(configVictim, VICTIM_TEXT);
  await symlink(configVictim, join(converted, 'config.json'));
  await runConvert({ model: fixtureDir('text-mlm'), out: converted });
  await assertUntouched(t, convertedLinks.victim, convertedLinks.links);
  await assertUntouched(t, configLinks.victim, configLinks.links);
  t.equal(await readFile(configVictim, 'utf8'), VICTIM_TEXT, 'the file a link at config.json pointed at is unchanged');
  t.equal(await readFile(join(converted, 'config.json'), 'utf8'), await readFile(join(fixtureDir('text-mlm'), 'config.json'), 'utf8'), 'config.json copied');
  t.equal((await readSafetensors(join(converted, 'model.safetensors'))).tensors.size, (await readSafetensors(join(fixtureDir('text-mlm'), 'model.safetensors'))).tensors.size, 'weights converted');

  const parts = join(dir, 'parts');
  await mkdir(parts);
  const part = join(parts, 'part-1.parquet');
  const partLinks = await plantLinks(dir, part);
  await writeEmbeddingPart(part, { ids: ['a'], paths: ['/a'], width: 2, embeddings: new Float32Array([1, 2]) }, { task: 'embed', model: 'Test', width: 2 });
  await assertUntouched(t, partLinks.victim, partLinks.links);
  t.same((await readEmbeddings(parts)).map((r) => r.id), ['a'], 'the part was written');
});

t.test('a Hub download never writes through a link planted at its partial file', async (t) => {
  const server = new HubServer();
  await server.start();
  t.teardown(() => server.close());
  const config = await readFile(join(fixtureDir('text-mlm'), 'config.json'));
  const weights = await readFile(join(fixtureDir('text-mlm'), 'model.safetensors'));
  server.addRepo('org/linked', { files: { 'config.json': config, 'model.safetensors': weights }, lfs: ['model.safetensors'] });
  const cache = await tempDir(t);
  const victim = join(cache, 'victim.txt');
  await writeFile(victim, VICTIM_TEXT);
  const blobs = join(cache, 'models--org--linked', 'blobs');
  await mkdir(blobs, { recursive: true });
  const links: string[] = [];
  for (const data of [config, weights]) {
    const link = join(blobs, `${sha256(data)}.incomplete`);
    await symlink(victim, link);
    links.push(link);
  }
  const snapshot = await snapshotDownload('org/linked', { cacheDir: cache, endpoint: server.url });
  t.equal(await readFile(victim, 'utf8'), VICTIM_TEXT, 'the file the links pointed at is unchanged');
  t.ok((await readFile(join(snapshot, 'model.safetensors'))).equals(weights), 'the weights were downloaded');
  t.ok((await readFile(join(snapshot, 'config.json'))).equals(config), 'config.json was downloaded');
  for (const link of links) await t.rejects(lstat(link), { code: 'ENOENT' }, 'the planted partial-file link was removed, not followed');
});
