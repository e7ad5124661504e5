/**
 * The release path, on one build: `npm run prebuild` (prebuildify, Node-API) runs once, in a
 * scratch copy of the package, before the tests; then that binary is checked (self-contained, CPU
 * and CUDA in one), `npm pack` packs it without rebuilding, and the tarball is installed into a
 * new project on a PATH with no compiler, no nvcc and no python3, offline from npm's cache, and
 * runs a fixture through the API (import and require) and the CLI. The cmake-js development build
 * is checked by configuring it (same source list), not by compiling everything a second time.
 */
import t, { type Test } from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fixtureDir, REPO } from './helpers/fixtures.js';
import { checkPackedFiles, programOnPath, type PackedFile } from './helpers/package-files.js';

const work = mkdtempSync(join(tmpdir(), 'perceiver-prebuild-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const pkg = join(work, 'package');
const platformDir = join(pkg, 'prebuilds', `${process.platform}-${process.arch}`);
const state: { built: boolean; binary?: string; tarball?: string; consumer?: string; bin?: string } = { built: false };

t.before(() => {
  // What `npm pack` needs: the sources, the compiled TypeScript (with tsc's incremental state, so
  // that pack's prepare step has nothing to redo), the repository's node_modules, and .gitignore
  // (which names prebuilds/ and dist/: "files" must still pack them).
  for (const entry of ['package.json', 'package-lock.json', '.gitignore', 'README.md', 'LICENSE', 'binding.gyp', 'CMakeLists.txt', 'native', 'scripts', 'lib', 'tsconfig.json', 'tsconfig.build.json']) {
    cpSync(join(REPO, entry), join(pkg, entry), { recursive: true });
  }
  cpSync(join(REPO, 'dist'), join(pkg, 'dist'), { recursive: true, filter: (src) => !/[/\\]dist[/\\](bench|demo|test)([/\\]|$)/.test(src) });
  symlinkSync(join(REPO, 'node_modules'), join(pkg, 'node_modules'), 'dir');
  const started = Date.now();
  const build = spawnSync('npm', ['run', 'prebuild'], { cwd: pkg, encoding: 'utf8', env: { ...process.env, JOBS: 'max' }, timeout: 1_500_000 });
  t.comment(`npm run prebuild: ${((Date.now() - started) / 1000).toFixed(0)} s`);
  if (build.status !== 0) throw new Error(`npm run prebuild failed: ${(build.stdout + build.stderr).slice(-1500)}`);
  state.built = true;
});

t.test('npm run prebuild: one self-contained binary for CPU and CUDA', async (t) => {
  const binaries = existsSync(platformDir) ? readdirSync(platformDir).filter((f) => f.endsWith('.node')) : [];
  t.same(binaries, ['perceiver-io.glibc.node'], `one binary in prebuilds/${process.platform}-${process.arch}, tagged glibc`);
  if (binaries.length !== 1) return;
  state.binary = join(platformDir, binaries[0]!);
  // Nothing beyond the C/C++ runtime: no shared BLAS, Fortran or CUDA library.
  const deps = execFileSync('ldd', [state.binary], { encoding: 'utf8' });
  t.notMatch(deps, /openblas|gfortran|cudart|cublas|libcuda|not found/, 'no shared BLAS, Fortran or CUDA library needed (cudart static, cuBLAS loaded at run time)');
  const symbols = execFileSync('objdump', ['-T', state.binary], { encoding: 'utf8' });
  const newest = (prefix: string) => [...new Set(symbols.match(new RegExp(`${prefix}_[0-9.]+`, 'g')) ?? [])].sort((a, b) => a.localeCompare(b, undefined, { numeric: true })).pop();
  t.comment(`needs ${newest('GLIBC')}, ${newest('GLIBCXX')} (README: Platforms)`);
  // CUDA is compiled in wherever the build found nvcc, as the release binary must have it.
  const cudaExpected = execFileSync(process.execPath, [join(pkg, 'native', 'scripts', 'build-config.cjs'), 'cuda-enabled'], { cwd: pkg, encoding: 'utf8' }) === '1';
  const caps = JSON.parse(execFileSync(process.execPath, ['-e', `console.log(JSON.stringify(require(${JSON.stringify(state.binary)}).capabilities()))`], { encoding: 'utf8' }));
  t.equal(caps.cuda.compiled, cudaExpected, `CUDA ${cudaExpected ? 'compiled in (nvcc found)' : 'left out (no nvcc here)'}`);
  t.equal(caps.cpu.available, true);
});

t.test('npm pack carries the binary, and prepack does not rebuild a current one', async (t) => {
  if (!state.binary) return t.fail('no binary to pack');
  const before = statSync(state.binary).mtimeMs;
  // Where nvcc is missing, the binary has no CUDA and prepack would rightly refuse it.
  const cpuOnly = execFileSync(process.execPath, [join(pkg, 'native', 'scripts', 'build-config.cjs'), 'cuda-enabled'], { cwd: pkg, encoding: 'utf8' }) !== '1';
  const pack = spawnSync('npm', ['pack', '--json', '--pack-destination', work], {
    cwd: pkg,
    encoding: 'utf8',
    timeout: 300_000,
    env: { ...process.env, ...(cpuOnly ? { PERCEIVER_NO_CUDA: '1' } : {}) },
  });
  t.equal(pack.status, 0, `npm pack succeeds${pack.status ? `: ${pack.stderr.slice(-800)}` : ''}`);
  if (pack.status !== 0) return;
  t.match(pack.stderr, /perceiver-io prepack: packing prebuilds\/linux-x64\/perceiver-io\.glibc\.node/, 'prepack checked the binary');
  t.notMatch(pack.stderr, /running npm run prebuild/, 'and did not rebuild it');
  t.equal(statSync(state.binary).mtimeMs, before, 'the binary is the one built before');
  const [result] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as { filename: string; files: PackedFile[] }[];
  const files = result!.files;
  t.ok(files.some((f) => f.path === 'prebuilds/linux-x64/perceiver-io.glibc.node' && f.size === statSync(state.binary!).size), 'the tarball holds the binary');
  checkPackedFiles(t, files, (path) => readFileSync(join(pkg, path), 'utf8'));
  state.tarball = join(work, result!.filename);
  t.ok(existsSync(state.tarball), `${result!.filename} written`);
});

/**
 * A new project that depends on the tarball, with a lockfile naming each dependency's tarball
 * and integrity as the repository's lockfile does, so that `npm ci --offline` installs it from
 * npm's local cache (where the repository's own install left them) without asking the registry.
 */
function consumerProject(tarball: string): string {
  const dir = join(work, 'consumer');
  mkdirSync(dir);
  cpSync(tarball, join(dir, 'perceiver-io.tgz'));
  const manifest = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8'));
  const lock = JSON.parse(readFileSync(join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, Record<string, unknown>> };
  const dependency = 'file:perceiver-io.tgz';
  const packages: Record<string, unknown> = {
    '': { name: 'consumer', version: '1.0.0', dependencies: { 'perceiver-io': dependency } },
    'node_modules/perceiver-io': {
      version: manifest.version,
      resolved: dependency,
      integrity: `sha512-${createHash('sha512').update(readFileSync(join(dir, 'perceiver-io.tgz'))).digest('base64')}`,
      hasInstallScript: true,
      license: manifest.license,
      dependencies: manifest.dependencies,
      optionalDependencies: manifest.optionalDependencies,
      bin: manifest.bin,
      engines: manifest.engines,
    },
  };
  // The runtime dependencies' entries (development-only ones left out).
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (path === '' || entry.dev === true || entry.link === true) continue;
    const { devOptional: _, ...rest } = entry;
    packages[path] = rest;
  }
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, dependencies: { 'perceiver-io': dependency } }));
  writeFileSync(join(dir, 'package-lock.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', lockfileVersion: 3, requires: true, packages }));
  return dir;
}

/** A machine without build tools: PATH holds node and npm only; the compilers, python and OpenBLAS point at nothing. */
function bareEnv(t: Test): NodeJS.ProcessEnv {
  const bin = join(work, 'bin');
  mkdirSync(bin, { recursive: true });
  symlinkSync(process.execPath, join(bin, 'node'));
  symlinkSync(programOnPath('npm'), join(bin, 'npm'));
  t.same(readdirSync(bin).sort(), ['node', 'npm'], 'PATH holds node and npm, nothing else');
  return {
    PATH: bin,
    HOME: process.env.HOME,
    // npm runs scripts through a shell; the shell is no build tool.
    npm_config_script_shell: '/bin/sh',
    CC: '/nonexistent/cc',
    CXX: '/nonexistent/c++',
    PYTHON: '/nonexistent/python3',
    npm_config_python: '/nonexistent/python3',
    PERCEIVER_OPENBLAS_DIR: '/nonexistent/openblas',
    PERCEIVER_NVCC: '/nonexistent/nvcc',
  };
}

t.test('the tarball installs with no compiler, nvcc or python3, in seconds, and runs', async (t) => {
  if (!state.tarball) return t.fail('no tarball to install');
  const consumer = consumerProject(state.tarball);
  const env = bareEnv(t);
  const started = Date.now();
  const install = spawnSync(join(env.PATH!, 'npm'), ['ci', '--offline', '--no-audit', '--no-fund', '--foreground-scripts'], { cwd: consumer, encoding: 'utf8', env, timeout: 300_000 });
  const seconds = (Date.now() - started) / 1000;
  t.equal(install.status, 0, `npm ci --offline succeeds${install.status ? `: ${(install.stdout + install.stderr).slice(-1200)}` : ''}`);
  if (install.status !== 0) return;
  t.comment(`npm ci of the tarball and its dependencies: ${seconds.toFixed(1)} s`);
  t.ok(seconds < 120, `installed in ${seconds.toFixed(1)} s`);
  const installed = join(consumer, 'node_modules', 'perceiver-io');
  t.match(install.stdout + install.stderr, /> perceiver-io@[\d.]+ install\n> node scripts\/install\.cjs/, 'its install step ran');
  t.notOk(existsSync(join(installed, 'build')), 'and compiled nothing (no build/ folder)');

  writeFileSync(
    join(consumer, 'check.mjs'),
    `import { PerceiverForMaskedLM, Tensor } from 'perceiver-io';
     const model = await PerceiverForMaskedLM.fromPretrained(${JSON.stringify(fixtureDir('text-mlm'))});
     const out = await model.forward({ inputs: new Tensor('int64', [1, 3], new BigInt64Array([4n, 70n, 5n])) });
     await model.dispose();
     console.log(JSON.stringify(out.logits.shape));`,
  );
  const esm = spawnSync(process.execPath, ['check.mjs'], { cwd: consumer, encoding: 'utf8', env, timeout: 60_000 });
  t.equal(esm.status, 0, `import: runs (${esm.stderr.trim().slice(0, 300)})`);
  t.equal(esm.stdout.trim(), '[1,48,262]', 'import: a forward on the text-mlm fixture');

  writeFileSync(join(consumer, 'check.cjs'), `const { capabilities } = require('perceiver-io'); console.log(JSON.stringify(capabilities().cpu.available));`);
  const cjs = spawnSync(process.execPath, ['check.cjs'], { cwd: consumer, encoding: 'utf8', env, timeout: 60_000 });
  t.equal(cjs.status, 0, `require: runs (${cjs.stderr.trim().slice(0, 300)})`);
  t.equal(cjs.stdout.trim(), 'true', 'require: the addon answers');

  const cli = join(consumer, 'node_modules', '.bin', 'perceiver-io');
  const output = join(work, 'out.safetensors');
  const infer = spawnSync(cli, ['infer', '--model', fixtureDir('text-mlm'), '--inputs', join(fixtureDir('text-mlm'), 'io.safetensors'), '--output', output], { cwd: consumer, encoding: 'utf8', env, timeout: 60_000 });
  t.equal(infer.status, 0, `the CLI runs (${infer.stderr.trim().slice(0, 300)})`);
  t.match(infer.stderr, /logits \[3, 48, 262\]/, 'and writes the logits');
  t.ok(existsSync(output), 'to the output file');

  const doctor = spawnSync(cli, ['doctor', '--json'], { cwd: consumer, encoding: 'utf8', env, timeout: 60_000 });
  t.equal(doctor.status, 0, doctor.stderr);
  const report = JSON.parse(doctor.stdout);
  t.equal(report.addon.kind, 'prebuilt', 'doctor: the prebuilt binary was loaded');
  t.equal(relative(installed, report.addon.path), 'prebuilds/linux-x64/perceiver-io.glibc.node');
});

t.test('cmake-js (the development build) configures the same sources as binding.gyp', async (t) => {
  if (!state.built) return t.fail('the prebuild failed');
  const cmake = join(work, 'cmake');
  for (const entry of ['package.json', 'CMakeLists.txt', 'native']) cpSync(join(pkg, entry), join(cmake, entry), { recursive: true });
  symlinkSync(join(REPO, 'node_modules'), join(cmake, 'node_modules'), 'dir');
  const configure = spawnSync('npx', ['cmake-js', 'configure', '--CDCMAKE_EXPORT_COMPILE_COMMANDS=ON'], { cwd: cmake, encoding: 'utf8', timeout: 300_000 });
  t.equal(configure.status, 0, `cmake-js configure succeeds${configure.status ? `: ${(configure.stdout + configure.stderr).slice(-800)}` : ''}`);
  if (configure.status !== 0) return;
  const commands = JSON.parse(readFileSync(join(cmake, 'build', 'compile_commands.json'), 'utf8')) as { file: string }[];
  const configured = commands.map((c) => relative(cmake, c.file)).filter((f) => f.startsWith('native/')).sort();
  const sources = execFileSync(process.execPath, [join(cmake, 'native', 'scripts', 'build-config.cjs'), 'sources'], { cwd: cmake, encoding: 'utf8' }).split(' ').sort();
  t.same(configured, sources, `the ${sources.length} files of build-config.cjs's list, no more, no fewer`);
});
