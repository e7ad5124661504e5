// Build settings shared by binding.gyp (node-gyp, prebuildify) and CMakeLists.txt (cmake-js), so
// the two builds compile one source list with one set of CUDA settings.
//   node native/scripts/build-config.cjs sources           the C++ (and, with CUDA, .cu) files, relative to the repo root
//   node native/scripts/build-config.cjs cuda-enabled      1 when nvcc and a static cudart were found, else 0
//   node native/scripts/build-config.cjs nvcc | nvcc-flags | cuda-include | cuda-lib-dir | cuda-archs
//   node native/scripts/build-config.cjs nvcc-checks       the ptxas flags that make a register spill a build error
//   node native/scripts/build-config.cjs cuda-headers      every project header the .cu files include, transitively
//
// No BLAS: the CPU products are the engine's own kernels (native/src/backend/cpu/kernels/gemm.h
// says why), so building needs only a C++17 compiler, python3 and make, and a prebuilt binary
// needs nothing installed beyond the C/C++ runtime.
//
// CUDA: compiled wherever nvcc exists (this machine and CI compile and link every kernel even
// without a GPU). cudart is linked statically and cuBLAS is loaded at run time, so one binary runs
// on CPU-only and GPU machines. PERCEIVER_NO_CUDA=1 builds without it; PERCEIVER_NVCC names nvcc;
// PERCEIVER_CUDA_ARCHS lists SM versions (default 80,90: A100, H100 / H200, plus PTX for newer).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const root = path.resolve(__dirname, '..', '..');

function list(file) {
  return fs
    .readFileSync(path.join(root, 'native', file), 'utf8')
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s && !s.startsWith('#'))
    .map((s) => path.posix.join('native', 'src', s));
}

function nvccCandidates() {
  const candidates = [process.env.PERCEIVER_NVCC];
  try {
    candidates.push(execFileSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' }).trim());
  } catch {
    // not on PATH
  }
  candidates.push('/usr/local/cuda/bin/nvcc');
  try {
    for (const dir of fs.readdirSync('/usr/local').filter((d) => /^cuda-\d/.test(d)).sort().reverse()) {
      candidates.push(`/usr/local/${dir}/bin/nvcc`);
    }
  } catch {
    // no /usr/local
  }
  return candidates.filter((c) => c && fs.existsSync(c));
}

// The first nvcc whose toolkit also has the runtime headers and a static cudart (a wrapper script
// on PATH, as some images have, is skipped for the real toolkit).
function cuda() {
  if (process.env.PERCEIVER_NO_CUDA === '1') return undefined;
  const archs = (process.env.PERCEIVER_CUDA_ARCHS || '80,90').split(',').map((a) => a.trim()).filter(Boolean);
  for (const nvcc of nvccCandidates()) {
    const home = path.resolve(path.dirname(fs.realpathSync(nvcc)), '..');
    const include = [path.join(home, 'include'), path.join(home, 'targets', 'x86_64-linux', 'include')].find((d) =>
      fs.existsSync(path.join(d, 'cuda_runtime_api.h')),
    );
    const libDir = [path.join(home, 'lib64'), path.join(home, 'targets', 'x86_64-linux', 'lib'), path.join(home, 'lib')].find((d) =>
      fs.existsSync(path.join(d, 'libcudart_static.a')),
    );
    if (include && libDir) return { nvcc, include, libDir, archs };
  }
  return undefined;
}

// A kernel that spills registers to local memory is a build error, in every instantiation and for
// every architecture (ptxas reports spills with -warn-spills; -Werror turns its warnings into
// errors). The tensor-core attention's wide heads were sized against this (see
// kernels/flash_attention_plan.h).
const NVCC_CHECKS = ['-Xptxas=-warn-spills,-Werror'];

// The project headers a source includes ("..." includes, looked up beside the including file, then
// under native/src as -I says), transitively, as repo-relative paths. gyp's make generator tracks
// no dependencies of a rule's action, so binding.gyp lists these as the nvcc rule's inputs: a change
// to a shared .cuh or to backend.h recompiles the kernels.
function includedHeaders(sources) {
  const src = path.join(root, 'native', 'src');
  const seen = new Set();
  const visit = (file) => {
    const text = fs.readFileSync(file, 'utf8');
    for (const match of text.matchAll(/^\s*#\s*include\s*"([^"]+)"/gm)) {
      const found = [path.join(path.dirname(file), match[1]), path.join(src, match[1])].find((f) => fs.existsSync(f));
      if (!found) throw new Error(`${path.relative(root, file)} includes "${match[1]}", which is neither beside it nor under native/src`);
      const rel = path.relative(root, found).split(path.sep).join('/');
      if (seen.has(rel)) continue;
      seen.add(rel);
      visit(found);
    }
  };
  for (const source of sources) visit(path.join(root, source));
  return [...seen].sort();
}

function nvccFlags(c) {
  const newest = c.archs[c.archs.length - 1];
  return [
    ...NVCC_CHECKS,
    '-O3',
    '-std=c++17',
    '-Xcompiler',
    '-fPIC',
    '-Xcompiler',
    '-fvisibility=hidden',
    `-I${path.join(root, 'native', 'src')}`,
    ...c.archs.flatMap((a) => ['-gencode', `arch=compute_${a},code=sm_${a}`]),
    '-gencode',
    `arch=compute_${newest},code=compute_${newest}`,
  ];
}

const what = process.argv[2];
const c = ['sources', 'cuda-enabled', 'nvcc', 'nvcc-flags', 'nvcc-checks', 'cuda-include', 'cuda-lib-dir', 'cuda-archs'].includes(what) ? cuda() : undefined;
const out = (text) => process.stdout.write(text);
switch (what) {
  case 'sources':
    out(list('sources.txt').concat(c ? list('cuda-sources.txt') : ['native/src/backend/cuda/cuda_unavailable.cc']).join(' '));
    break;
  case 'cuda-enabled':
    out(c ? '1' : '0');
    break;
  case 'nvcc':
    out(c ? c.nvcc : '');
    break;
  case 'nvcc-flags':
    out(c ? nvccFlags(c).join(' ') : '');
    break;
  case 'nvcc-checks':
    out(c ? NVCC_CHECKS.join(' ') : '');
    break;
  case 'cuda-headers':
    out(includedHeaders(list('cuda-sources.txt').filter((f) => f.endsWith('.cu'))).join(' '));
    break;
  case 'cuda-include':
    out(c ? c.include : '');
    break;
  case 'cuda-lib-dir':
    out(c ? c.libDir : '');
    break;
  case 'cuda-archs':
    out(c ? c.archs.join(';') : '');
    break;
  default:
    process.stderr.write('usage: build-config.cjs sources|cuda-enabled|nvcc|nvcc-flags|nvcc-checks|cuda-include|cuda-lib-dir|cuda-archs|cuda-headers\n');
    process.exit(2);
}
