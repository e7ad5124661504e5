/**
 * `perceiver-io doctor`: the report agrees with what the loaded addon says, sizes the Hub cache it
 * is pointed at, says when the addon does not load (exit 1, not a stack), and refuses bad options.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { capabilities } from '../lib/index.js';
import { REPO, tempDir } from './helpers/fixtures.js';

const BIN = join(REPO, JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).bin['perceiver-io']);

function doctor(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [BIN, 'doctor', ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('--json agrees with capabilities() and sizes the Hub cache', async (t) => {
  const cache = await tempDir(t, 'perceiver-doctor-');
  // A Hub cache as huggingface_hub lays it out: blobs, and snapshots of links to them (not counted twice).
  const repo = join(cache, 'models--org--tiny');
  mkdirSync(join(repo, 'blobs'), { recursive: true });
  mkdirSync(join(repo, 'snapshots', 'abc'), { recursive: true });
  writeFileSync(join(repo, 'blobs', 'f1'), Buffer.alloc(1000));
  writeFileSync(join(repo, 'blobs', 'f2'), Buffer.alloc(24));
  symlinkSync(join(repo, 'blobs', 'f1'), join(repo, 'snapshots', 'abc', 'model.safetensors'));
  mkdirSync(join(cache, 'datasets--org--data'));

  const r = doctor(['--json'], { HF_HUB_CACHE: cache });
  t.equal(r.status, 0, `exit 0 (${r.stderr.trim()})`);
  const report = JSON.parse(r.stdout);
  const caps = capabilities();
  t.equal(report.addon.loaded, true, 'the addon loaded');
  t.ok(existsSync(report.addon.path), `the binary it names exists: ${report.addon.path}`);
  t.match(report.addon.kind, /^(prebuilt|source build)$/);
  t.equal(report.addon.kind === 'prebuilt', report.addon.path.includes('/prebuilds/'), 'kind follows the folder the binary came from');
  const gemm = (caps.cpu as { gemm?: unknown }).gemm;
  t.equal(report.cpu.products, gemm === undefined ? caps.cpu.blas : typeof gemm === 'string' ? gemm : JSON.stringify(gemm), 'the matrix-product library the engine reports');
  t.equal(report.cpu.threads, caps.cpu.threads);
  if (existsSync('/proc/cpuinfo')) {
    const flags = new Set(/^flags\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))![1]!.split(/\s+/));
    t.same(report.cpu.features, { avx512f: flags.has('avx512f'), avx2: flags.has('avx2'), fma: flags.has('fma') }, 'CPU features from /proc/cpuinfo');
  }
  t.equal(report.cuda.compiled, caps.cuda.compiled);
  t.equal(report.cuda.available, caps.cuda.available);
  t.equal(report.cuda.gpus.length, caps.cuda.deviceCount, 'one entry per GPU');
  t.equal(report.cuda.runtime, caps.cuda.runtimeVersion, 'the CUDA runtime linked in');
  t.equal(report.cuda.driverCuda, caps.cuda.driverVersion, 'the CUDA version the driver supports');
  if (caps.cuda.compiled) t.match(report.cuda.runtime, /^\d+\.\d+$/, `a CUDA build says its runtime: ${report.cuda.runtime}`);
  if (caps.cuda.available) {
    t.notOk(report.cuda.advice, 'no advice when the GPU is usable');
    for (const gpu of report.cuda.gpus) t.ok(gpu.totalBytes > 0 && gpu.freeBytes <= gpu.totalBytes, `cuda:${gpu.index} memory`);
  } else {
    t.match(report.cuda.advice, /install|rebuild/, `says what to install: ${report.cuda.advice}`);
  }
  t.same(report.hubCache, { path: cache, exists: true, bytes: 1024, models: 1 }, 'the cache: blob bytes, links not counted, models only');
});

t.test('cuBLASLt is looked for where the loader would look (LD_LIBRARY_PATH)', async (t) => {
  const dir = await tempDir(t, 'perceiver-doctor-lib-');
  // Only its name matters: doctor looks for the file, it does not load it.
  writeFileSync(join(dir, 'libcublasLt.so.13'), '');
  const r = doctor(['--json'], { LD_LIBRARY_PATH: dir });
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout).cuda.cublasLt, { found: true, path: join(dir, 'libcublasLt.so.13') });
});

t.test('the human report names each part', async (t) => {
  const r = doctor([], { HF_HUB_CACHE: '/nonexistent/hub-cache' });
  t.equal(r.status, 0, r.stderr);
  for (const label of ['node ', 'addon ', 'cpu ', 'cuda ', 'hub cache ']) t.match(r.stdout, new RegExp(`^${label}`, 'm'), `a "${label.trim()}" line`);
  t.match(r.stdout, /AVX-512 (yes|no|\?), AVX2 (yes|no|\?)/);
  t.match(r.stdout, /hub cache +\/nonexistent\/hub-cache \(does not exist yet/);
});

t.test('an addon that does not load: exit 1, the reason, no stack', async (t) => {
  const r = doctor(['--json'], { PERCEIVER_IO_PREBUILD: '/nonexistent/perceiver_io.node' });
  t.equal(r.status, 1);
  const report = JSON.parse(r.stdout);
  t.equal(report.addon.loaded, false);
  t.match(report.addon.error, /\/nonexistent\/perceiver_io\.node/, 'names the binary it tried');
  const human = doctor([], { PERCEIVER_IO_PREBUILD: '/nonexistent/perceiver_io.node' });
  t.equal(human.status, 1);
  t.match(human.stdout, /addon +NOT LOADED/);
  t.match(human.stdout, /cuda +unknown: the addon did not load/);
  t.notMatch(human.stdout + human.stderr, /\n\s+at /, 'no stack trace');
});

t.test('usage', async (t) => {
  const bad = doctor(['--bogus']);
  t.equal(bad.status, 2);
  t.match(bad.stderr, /^perceiver-io: .*--bogus/);
  const help = doctor(['--help']);
  t.equal(help.status, 0);
  t.match(help.stdout, /Usage: perceiver-io doctor \[--json\]/);
});
