/**
 * The CUDA part of the native build (native/scripts/build-config.cjs, binding.gyp, CMakeLists.txt).
 * gyp's make generator tracks no header dependencies of a rule's action, so binding.gyp's nvcc rule
 * lists, as its inputs, every project header the .cu files include transitively
 * (`build-config.cjs cuda-headers`): a change to a shared .cuh or to backend.h recompiles the
 * kernels under node-gyp. The includes are read here independently, by the C++ preprocessor
 * (`g++ -MM`), and compared, with the list and with the Makefile node-gyp generates from binding.gyp.
 * Both builds make a register spill a build error.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { REPO } from './helpers/fixtures.js';

const config = (what: string): string => execFileSync(process.execPath, [join(REPO, 'native', 'scripts', 'build-config.cjs'), what], { cwd: REPO, encoding: 'utf8' });
const cudaSources = readFileSync(join(REPO, 'native', 'cuda-sources.txt'), 'utf8')
  .split('\n')
  .map((s) => s.trim())
  .filter((s) => s.endsWith('.cu'))
  .map((s) => `native/src/${s}`);
const headers = new Set(config('cuda-headers').split(' ').filter(Boolean));

/**
 * The project headers each source includes, transitively, as the preprocessor resolves them: one
 * `g++ -MM` over every source (-MG: the CUDA toolkit's headers are not on g++'s path; they count as
 * generated and are left out with every other header outside native/src).
 */
function preprocessorHeaders(files: string[]): Map<string, string[]> {
  const src = join(REPO, 'native', 'src');
  const rules = execFileSync('g++', ['-MM', '-MG', '-x', 'c++', '-D__CUDACC__', '-I', src, ...files.map((f) => join(REPO, f))], { encoding: 'utf8' })
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((line) => line.includes(':'));
  t.equal(rules.length, files.length, 'one dependency rule per source');
  const bySource = new Map<string, string[]>();
  for (const rule of rules) {
    const [source, ...deps] = rule.split(':').slice(1).join(':').trim().split(/\s+/);
    bySource.set(relative(REPO, source!), deps.filter((p) => p.startsWith(src)).map((p) => relative(REPO, p)));
  }
  return bySource;
}
const included = preprocessorHeaders(cudaSources);

t.test("the nvcc rule's inputs cover every header each .cu includes, transitively", async (t) => {
  t.ok(cudaSources.length >= 20, `${cudaSources.length} CUDA sources`);
  for (const h of ['native/src/backend/backend.h', 'native/src/backend/cuda/kernels/flash_attention.cuh', 'native/src/backend/cuda/kernels/flash_attention_plan.h']) {
    t.ok(headers.has(h), `cuda-headers lists ${h}`);
  }
  for (const source of cudaSources) {
    const mine = included.get(source) ?? [];
    t.ok(mine.length > 0, `${source} includes project headers`);
    t.same(mine.filter((h) => !headers.has(h)), [], `${source}: all ${mine.length} of its headers are rule inputs`);
  }
  for (const h of headers) t.ok(existsSync(join(REPO, h)), `${h} exists`);
});

t.test('binding.gyp feeds that list to the nvcc rule', async (t) => {
  // gyp files are Python literals; this one is JSON once its comments are gone.
  const gyp = JSON.parse(readFileSync(join(REPO, 'binding.gyp'), 'utf8').replace(/^\s*#.*$/gm, ''));
  const cuda = gyp.targets[0].conditions.find((c: unknown[]) => c[0] === 'perceiver_cuda==1')[1];
  const rule = cuda.rules.find((r: { rule_name: string }) => r.rule_name === 'nvcc');
  t.same(rule.inputs, ['<!@(node native/scripts/build-config.cjs cuda-headers)'], 'inputs: the scanned headers');
  t.match(rule.action.join(' '), /build-config\.cjs nvcc-flags/, 'the action takes the shared nvcc flags');
});

t.test("node-gyp's generated Makefile makes every kernel depend on the shared headers", { timeout: 60_000 }, async (t) => {
  // Configure a copy of the build description (binding.gyp, native/) in a temp dir, so the test
  // reads the Makefile gyp really writes without touching this checkout's build/.
  const dir = mkdtempSync(join(tmpdir(), 'perceiver-gyp-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(join(REPO, 'binding.gyp'), join(dir, 'binding.gyp'));
  cpSync(join(REPO, 'native'), join(dir, 'native'), { recursive: true });
  symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'));
  execFileSync(process.execPath, [join(REPO, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'), 'configure'], { cwd: dir, stdio: 'pipe', timeout: 50_000 });
  const mk = readFileSync(join(dir, 'build', 'perceiver_io.target.mk'), 'utf8');
  if (config('cuda-enabled') !== '1') {
    t.notMatch(mk, /nvcc/, 'without CUDA there is no nvcc rule');
    return;
  }
  for (const source of cudaSources) {
    const object = source.split('/').pop()!.replace(/\.cu$/, '.o');
    const line = mk.split('\n').find((l) => l.includes(`/geni/cuda/${object}: $(srcdir)/${source}`));
    t.ok(line, `the Makefile has a rule for ${object}`);
    for (const h of included.get(source) ?? []) t.ok(line?.includes(`$(srcdir)/${h}`), `${object} depends on ${h}`);
  }
});

t.test('a register spill fails the build, in both build systems', async (t) => {
  const checks = config('nvcc-checks');
  if (config('cuda-enabled') === '1') {
    t.match(checks, /-warn-spills/, 'ptxas reports spills');
    t.match(checks, /-Werror/, 'and its warnings are errors');
    t.ok(config('nvcc-flags').includes(checks), 'node-gyp passes them to nvcc');
  } else {
    t.equal(checks, '', 'without CUDA there is nothing to check');
  }
  t.match(readFileSync(join(REPO, 'CMakeLists.txt'), 'utf8'), /build_config\(nvcc-checks/, 'CMake reads the same flags');
});
