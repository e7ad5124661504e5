/**
 * The model description is declared once (native/spec/model_spec.json); lib/modeling/spec.ts and
 * native/src/napi/spec_nodes.h are written from it by scripts/generate-spec.mjs and checked in.
 * These tests fail when either file is not what the script writes, and check that the check itself
 * notices a stale file.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from './helpers/fixtures.js';

const GENERATOR = join(import.meta.dirname, '..', 'scripts', 'generate-spec.mjs');
const FILES = ['native/spec/model_spec.json', 'lib/modeling/spec.ts', 'native/src/napi/spec_nodes.h'];

function check(root?: string) {
  return spawnSync(process.execPath, [GENERATOR, '--check', ...(root ? ['--root', root] : [])], { encoding: 'utf8', timeout: 30_000 });
}

t.test('the checked-in spec.ts and spec_nodes.h are what the generator writes', async (t) => {
  const r = check();
  t.equal(r.signal, null, 'no signal');
  t.equal(r.status, 0, `up to date (stderr: ${r.stderr.trim()})`);
});

t.test('--check names a stale output', async (t) => {
  const root = await tempDir(t);
  for (const file of FILES) {
    await mkdir(join(root, file, '..'), { recursive: true });
    await cp(join(import.meta.dirname, '..', file), join(root, file));
  }
  t.equal(check(root).status, 0, 'a faithful copy passes');
  await writeFile(join(root, 'native/src/napi/spec_nodes.h'), '// edited by hand\n');
  const r = check(root);
  t.equal(r.status, 1, 'a hand-edited header fails');
  t.match(r.stderr, /native\/src\/napi\/spec_nodes\.h is not what scripts\/generate-spec\.mjs writes/);
  t.notMatch(r.stderr, /lib\/modeling\/spec\.ts/, 'and names only the stale file');
});
