/**
 * The package as npm sees it, without building anything: what `npm pack` puts in the tarball, the
 * lifecycle scripts, and the install step (scripts/install.cjs) in each case: a binary that loads
 * (nothing to do), no build tools (one paragraph, exit 1, no node-gyp), and a source build that
 * fails (one paragraph naming the log, no gyp stack). test/prebuild.test.ts builds, packs and
 * installs the real tarball.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { REPO, tempDir } from './helpers/fixtures.js';
import { checkPackedFiles, programOnPath, type PackedFile } from './helpers/package-files.js';

const manifest = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));

t.test('npm pack --dry-run: only the package\'s files, the license, and source maps with their sources', async (t) => {
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
  t.equal(r.status, 0, `npm pack --dry-run succeeds ${r.stderr.slice(-300)}`);
  const [pack] = JSON.parse(r.stdout) as { files: PackedFile[] }[];
  checkPackedFiles(t, pack!.files, (path) => readFileSync(join(REPO, path), 'utf8'));
});

t.test('lifecycle scripts', async (t) => {
  t.equal(manifest.scripts.install, 'node scripts/install.cjs');
  t.equal(manifest.scripts.prepack, 'node scripts/prepack.cjs', 'npm pack / publish make sure the prebuilt binary is there');
  t.match(manifest.scripts.prebuild, /^prebuildify --napi --strip --tag-libc$/);
  // npm runs "prebuild" before a script named "build": one would start a native build each time.
  t.notOk('build' in manifest.scripts, 'no "build" script (the TypeScript build is "build:ts")');
});

/** A copy of the package's install-time files (no build/, no prebuilds/), with the repository's node_modules. */
async function scratchPackage(t: Test): Promise<string> {
  const pkg = join(await tempDir(t, 'perceiver-install-'), 'perceiver-io');
  for (const entry of ['package.json', 'binding.gyp', 'native', 'scripts']) cpSync(join(REPO, entry), join(pkg, entry), { recursive: true });
  symlinkSync(join(REPO, 'node_modules'), join(pkg, 'node_modules'), 'dir');
  return pkg;
}

/** A folder whose only program is node: no compiler, make, python3 or nvcc. */
async function nodeOnlyPath(t: Test): Promise<string> {
  const bin = join(await tempDir(t, 'perceiver-path-'), 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  return bin;
}

function install(pkg: string, env: Record<string, string | undefined>) {
  const r = spawnSync(process.execPath, [join(pkg, 'scripts', 'install.cjs')], { cwd: pkg, encoding: 'utf8', timeout: 180_000, env: env as NodeJS.ProcessEnv });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const BARE = (path: string) => ({
  PATH: path,
  HOME: process.env.HOME,
  CC: '/nonexistent/cc',
  CXX: '/nonexistent/c++',
  PYTHON: '/nonexistent/python3',
  npm_config_python: '/nonexistent/python3',
  PERCEIVER_OPENBLAS_DIR: '/nonexistent/openblas',
});

// Node's own headers, where this Node has them, so that node-gyp does not download them.
const NODE_DIR = resolve(dirname(process.execPath), '..');
const NODE_HEADERS: { npm_config_nodedir?: string } = existsSync(join(NODE_DIR, 'include', 'node', 'node_api.h')) ? { npm_config_nodedir: NODE_DIR } : {};

t.test('a binary that loads: the install step does nothing else', async (t) => {
  const pkg = await scratchPackage(t);
  // The binary the repository itself loads (its build, or a prebuilt one).
  const built = (createRequire(import.meta.url)('node-gyp-build') as { path(dir: string): string }).path(REPO);
  mkdirSync(join(pkg, 'build', 'Release'), { recursive: true });
  copyFileSync(built, join(pkg, 'build', 'Release', 'perceiver_io.node'));
  const r = install(pkg, BARE(await nodeOnlyPath(t)));
  t.equal(r.status, 0, `exit 0 without any build tool (${r.stderr.trim()})`);
  t.equal(r.stderr, '', 'silent');

  // A binary named by PERCEIVER_IO_PREBUILD counts too (the loader takes it first).
  const elsewhere = await scratchPackage(t);
  const named = install(elsewhere, { ...BARE(await nodeOnlyPath(t)), PERCEIVER_IO_PREBUILD: built });
  t.equal(named.status, 0, `PERCEIVER_IO_PREBUILD: exit 0 without any build tool (${named.stderr.trim()})`);
  const wrong = install(elsewhere, { ...BARE(await nodeOnlyPath(t)), PERCEIVER_IO_PREBUILD: '/nonexistent/perceiver_io.node' });
  t.equal(wrong.status, 1, 'a PERCEIVER_IO_PREBUILD that does not load is no binary');
  t.match(wrong.stderr, /The binary PERCEIVER_IO_PREBUILD names did not load \(Error: Cannot find module '\/nonexistent\/perceiver_io\.node'\)/, 'and the paragraph says why');

  const forced = install(pkg, { ...BARE(await nodeOnlyPath(t)), npm_config_build_from_source: 'true' });
  t.equal(forced.status, 1, '--build-from-source builds even so (and here cannot)');
  t.match(forced.stderr, /A build from source was asked for \(--build-from-source\)\.\n  It cannot be built from source here\. Missing: /);
});

t.test('no binary and no build tools: one paragraph, exit 1, node-gyp never started', async (t) => {
  const pkg = await scratchPackage(t);
  const r = install(pkg, BARE(await nodeOnlyPath(t)));
  t.equal(r.status, 1);
  const lines = r.stderr.trimEnd().split('\n');
  t.match(lines[0], /^perceiver-io: could not install its native addon for linux-x64 \(Node v\d+/, 'starts by saying what failed');
  t.ok(lines.slice(1).every((l) => l.startsWith('  ')), 'one paragraph: every further line indented');
  t.ok(lines.length <= 8, `${lines.length} lines`);
  t.match(lines[1], /^  It carries no prebuilt binary\.$/);
  t.match(r.stderr, /It cannot be built from source here\. Missing: the C\+\+ compiler CXX names \(\/nonexistent\/c\+\+\), make, the python that PYTHON \/ npm_config_python names \(\/nonexistent\/python3\)\./);
  t.match(r.stderr, /apt-get install g\+\+ make python3/, 'says what to install');
  t.match(r.stderr, /npm rebuild perceiver-io/, 'and how to retry');
  t.notMatch(r.stderr, /gyp (ERR|info)|\n\s+at /, 'no gyp output, no stack');
  t.notOk(existsSync(join(pkg, 'build')), 'nothing was built');
});

t.test('a prebuilt binary that does not load (another glibc, a damaged file): the paragraph says so', async (t) => {
  const pkg = await scratchPackage(t);
  mkdirSync(join(pkg, 'prebuilds', 'linux-x64'), { recursive: true });
  writeFileSync(join(pkg, 'prebuilds', 'linux-x64', 'perceiver-io.glibc.node'), 'not an ELF file');
  const r = install(pkg, BARE(await nodeOnlyPath(t)));
  t.equal(r.status, 1);
  t.match(r.stderr, /\n  Its prebuilt binary for linux-x64 did not load \(Error: .*perceiver-io\.glibc\.node: (file too short|invalid ELF header)\)\.\n/);
  t.match(r.stderr, /It cannot be built from source here\. Missing: /);
});

t.test('a source build that fails: one paragraph with its first error and the log', async (t) => {
  const pkg = await scratchPackage(t);
  // The tools are there, but the compiler fails at once (without CUDA, so no nvcc runs first).
  // npm hands install scripts its own node-gyp (npm_config_node_gyp), as here.
  const npmGyp = join(dirname(programOnPath('npm')), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  const gyp = existsSync(npmGyp) ? { npm_config_node_gyp: npmGyp } : {};
  const r = install(pkg, { PATH: process.env.PATH, HOME: process.env.HOME, CC: '/bin/false', CXX: '/bin/false', PERCEIVER_NO_CUDA: '1', ...NODE_HEADERS, ...gyp });
  t.equal(r.status, 1);
  const lines = r.stderr.trimEnd().split('\n');
  t.match(lines[0], /^perceiver-io: could not install its native addon/);
  t.ok(lines.slice(1).every((l) => l.startsWith('  ')), 'one paragraph');
  t.ok(lines.length <= 10, `${lines.length} lines`);
  t.notMatch(r.stderr, /gyp (ERR|info)|\n\s+at /, 'no gyp stack');
  const log = /The build's full output: (\S+)/.exec(r.stderr)?.[1];
  t.ok(log && existsSync(log), `names its log: ${log}`);
  if (log) {
    t.match(readFileSync(log, 'utf8'), /gyp/, 'which holds node-gyp\'s output');
    rmSync(log, { force: true });
  }
  t.match(r.stderr, NODE_HEADERS.npm_config_nodedir ? /The first error: make: \*\*\* .* Error 1\n/ : /The first error: \S/, 'and the first error');
});

t.test("a build that explains itself (native/scripts/build-config.cjs's own message): that message is the paragraph's", async (t) => {
  const pkg = await scratchPackage(t);
  // A build-config that cannot find something, as it says when a library is missing.
  writeFileSync(
    join(pkg, 'native', 'scripts', 'build-config.cjs'),
    "process.stderr.write('perceiver-io: cannot find libexample to build the native addon\\n  On Debian/Ubuntu: apt-get install libexample-dev\\n'); process.exit(1);\n",
  );
  const r = install(pkg, { PATH: process.env.PATH, HOME: process.env.HOME, ...NODE_HEADERS });
  t.equal(r.status, 1);
  t.match(r.stderr, /\n  Building it from source failed\. cannot find libexample to build the native addon\. On Debian\/Ubuntu: apt-get install libexample-dev\.\n/);
  t.notMatch(r.stderr, /gyp (ERR|info)/);
  const log = /The build's full output: (\S+)/.exec(r.stderr)?.[1];
  if (log) rmSync(log, { force: true });
});
