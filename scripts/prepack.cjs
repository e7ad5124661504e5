#!/usr/bin/env node
// `npm pack` / `npm publish` run this first: the tarball must carry this platform's prebuilt
// binary, current with the native sources. So it runs `npm run prebuild` (prebuildify) when
// prebuilds/<platform>-<arch>/ has no binary or one older than a file under native/ or
// binding.gyp, and then refuses to pack a binary that does not load, or one without the CUDA
// backend unless PERCEIVER_NO_CUDA=1 asked for a CPU-only build (the release binary is one
// binary for CPU and GPU machines: cudart linked in, cuBLAS loaded at run time).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);

function binaries() {
  try {
    return fs.readdirSync(dir).filter((f) => f.endsWith('.node')).map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

/** The newest modification time among the files the binary is built from. */
function newestSource() {
  let newest = fs.statSync(path.join(root, 'binding.gyp')).mtimeMs;
  const walk = (d) => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, entry.name);
      if (entry.isDirectory()) walk(p);
      else newest = Math.max(newest, fs.statSync(p).mtimeMs);
    }
  };
  walk(path.join(root, 'native'));
  return newest;
}

function stop(message) {
  process.stderr.write(`perceiver-io prepack: ${message}\n`);
  process.exit(1);
}

const found = binaries();
if (found.length > 1) stop(`more than one binary in ${dir} (${found.map((f) => path.basename(f)).join(', ')}): remove the stale ones`);
const stale = found.length === 0 || fs.statSync(found[0]).mtimeMs < newestSource();
if (stale) {
  process.stderr.write(`perceiver-io prepack: ${found.length ? 'the prebuilt binary is older than the native sources' : 'no prebuilt binary'}; running npm run prebuild\n`);
  fs.rmSync(dir, { recursive: true, force: true });
  const npm = process.env.npm_execpath;
  const build = npm
    ? spawnSync(process.execPath, [npm, 'run', 'prebuild'], { cwd: root, stdio: 'inherit' })
    : spawnSync('npm', ['run', 'prebuild'], { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) stop('npm run prebuild failed');
}

const [binary] = binaries();
if (!binary) stop(`npm run prebuild left no binary in ${dir}`);
const probe = spawnSync(process.execPath, ['-e', `process.stdout.write(JSON.stringify(require(${JSON.stringify(binary)}).capabilities()))`], { encoding: 'utf8' });
if (probe.status !== 0) stop(`${binary} does not load: ${probe.stderr.trim().split('\n').slice(0, 3).join(' ')}`);
const caps = JSON.parse(probe.stdout);
if (!caps.cuda.compiled && process.env.PERCEIVER_NO_CUDA !== '1') {
  stop(`${path.relative(root, binary)} has no CUDA backend (nvcc was not found when it was built). Build it where the CUDA toolkit is installed, or set PERCEIVER_NO_CUDA=1 to pack a CPU-only binary.`);
}
process.stderr.write(`perceiver-io prepack: packing ${path.relative(root, binary)} (CUDA ${caps.cuda.compiled ? 'compiled in' : 'left out'})\n`);
