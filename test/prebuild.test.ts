/**
 * The two builds of the addon. `npm run prebuild` (prebuildify, Node-API) makes a self-contained
 * binary that node-gyp-build loads: built here in a scratch copy of the package, then used from a
 * folder that has no build/ and no compiler step, to run a real checkpoint. `npm run build:native`
 * (cmake-js, the development build) compiles the same source list into a loadable addon.
 */
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { cpSync, existsSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fixtureDir, REPO, tempDir } from './helpers/fixtures.js';

t.test('npm run prebuild makes a binary that node-gyp-build loads and runs', async (t) => {
  const work = await tempDir(t, 'perceiver-prebuild-');
  const pkg = join(work, 'package');
  for (const entry of ['package.json', 'binding.gyp', 'native']) cpSync(join(REPO, entry), join(pkg, entry), { recursive: true });
  symlinkSync(join(REPO, 'node_modules'), join(pkg, 'node_modules'), 'dir');
  const build = spawnSync('npm', ['run', 'prebuild'], { cwd: pkg, encoding: 'utf8', env: { ...process.env, JOBS: 'max' }, timeout: 900_000 });
  t.equal(build.status, 0, `npm run prebuild succeeds${build.status ? `: ${build.stderr.slice(-500)}` : ''}`);
  const dir = join(pkg, 'prebuilds', `${process.platform}-${process.arch}`);
  const binaries = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.node')) : [];
  t.equal(binaries.length, 1, `one binary in prebuilds/${process.platform}-${process.arch}: ${binaries.join(', ')}`);
  if (binaries.length !== 1) return;

  // Nothing beyond the C/C++ runtime: OpenBLAS is linked in.
  const deps = execFileSync('ldd', [join(dir, binaries[0]!)], { encoding: 'utf8' });
  t.notMatch(deps, /openblas|gfortran|cudart|cublas|libcuda|not found/, 'no shared BLAS, Fortran or CUDA library needed (cudart static, cuBLAS loaded at run time)');

  // A consumer: the published files (dist + prebuilds), no build/ folder, no compiler step.
  const consumer = join(work, 'consumer');
  cpSync(join(REPO, 'package.json'), join(consumer, 'package.json'));
  cpSync(join(REPO, 'dist'), join(consumer, 'dist'), { recursive: true });
  cpSync(join(pkg, 'prebuilds'), join(consumer, 'prebuilds'), { recursive: true });
  symlinkSync(join(REPO, 'node_modules'), join(consumer, 'node_modules'), 'dir');
  t.notOk(existsSync(join(consumer, 'build')), 'the consumer has no build folder');
  const script = join(consumer, 'check.mjs');
  writeFileSync(
    script,
    `import { AutoModel, Tensor, capabilities } from ${JSON.stringify(pathToFileURL(join(consumer, 'dist', 'lib', 'index.js')).href)};
     import { createRequire } from 'node:module';
     const require = createRequire(import.meta.url);
     const path = require('node-gyp-build').path(${JSON.stringify(consumer)});
     const model = await AutoModel.fromPretrained(${JSON.stringify(fixtureDir('text-classification'))});
     const out = await model.forward({ inputs: new Tensor('int64', [1, 3], new BigInt64Array([4n, 70n, 5n])) });
     await model.dispose();
     console.log(JSON.stringify({ path, blas: capabilities().cpu.blas, shape: out.logits.shape }));`,
  );
  const run = spawnSync(process.execPath, [script], { cwd: consumer, encoding: 'utf8', env: { ...process.env, PERCEIVER_IO_PREBUILD: '' } });
  t.equal(run.status, 0, `the consumer runs (${run.stderr.trim().slice(0, 300)})`);
  const report = JSON.parse(run.stdout.trim().split('\n').pop() ?? '{}');
  t.match(report.path, /prebuilds\/linux-x64\/.*\.node$/, 'node-gyp-build picked the prebuilt binary');
  t.match(report.blas, /OpenBLAS/);
  t.same(report.shape, [1, 3]);
});

t.test('npm run build:native (cmake-js) builds the same sources into a loadable addon', async (t) => {
  const pkg = join(await tempDir(t, 'perceiver-cmake-'), 'package');
  for (const entry of ['package.json', 'CMakeLists.txt', 'native']) cpSync(join(REPO, entry), join(pkg, entry), { recursive: true });
  symlinkSync(join(REPO, 'node_modules'), join(pkg, 'node_modules'), 'dir');
  const build = spawnSync('npm', ['run', 'build:native', '--', '--parallel', '2'], { cwd: pkg, encoding: 'utf8', timeout: 900_000 });
  t.equal(build.status, 0, `cmake-js compile succeeds${build.status ? `: ${(build.stdout + build.stderr).slice(-800)}` : ''}`);
  const binary = join(pkg, 'build', 'Release', 'perceiver_io.node');
  t.ok(existsSync(binary), 'build/Release/perceiver_io.node exists');
  if (!existsSync(binary)) return;
  const addon = createRequire(import.meta.url)(binary) as { capabilities(): { cpu: { available: boolean } }; NativeModel: unknown };
  t.equal(addon.capabilities().cpu.available, true, 'it loads and answers');
  t.type(addon.NativeModel, 'function');
});
