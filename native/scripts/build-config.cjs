// Build settings shared by binding.gyp (node-gyp, prebuildify) and CMakeLists.txt (cmake-js), so
// the two builds compile one source list and link one BLAS.
//   node native/scripts/build-config.cjs sources        -> the .cc files, space separated, relative to the repo root
//   node native/scripts/build-config.cjs openblas-include
//   node native/scripts/build-config.cjs openblas-lib   -> path of the static libopenblas.a
//
// OpenBLAS is linked statically (its pthread build, which threads sgemm itself) so that a
// prebuilt binary needs nothing installed. Set PERCEIVER_OPENBLAS_DIR to a folder holding
// include/cblas.h and lib/libopenblas.a to use another build.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');

function sources() {
  return fs
    .readFileSync(path.join(root, 'native', 'sources.txt'), 'utf8')
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s && !s.startsWith('#'))
    .map((s) => path.posix.join('native', s));
}

function openblas() {
  const custom = process.env.PERCEIVER_OPENBLAS_DIR;
  const candidates = custom
    ? [{ include: path.join(custom, 'include'), lib: path.join(custom, 'lib', 'libopenblas.a') }]
    : ['x86_64-linux-gnu', 'aarch64-linux-gnu'].flatMap((triple) => [
        { include: `/usr/include/${triple}/openblas-pthread`, lib: `/usr/lib/${triple}/openblas-pthread/libopenblas.a` },
      ]).concat([{ include: '/usr/include/openblas', lib: '/usr/lib64/libopenblas.a' }]);
  for (const c of candidates) {
    if (fs.existsSync(path.join(c.include, 'cblas.h')) && fs.existsSync(c.lib)) return c;
  }
  process.stderr.write(
    'perceiver-io: cannot find a static OpenBLAS (cblas.h and libopenblas.a) to build the native addon.\n' +
      '  On Debian/Ubuntu: apt-get install libopenblas-pthread-dev\n' +
      '  Or set PERCEIVER_OPENBLAS_DIR to a folder with include/cblas.h and lib/libopenblas.a.\n' +
      `  Looked in: ${candidates.map((c) => c.lib).join(', ')}\n`,
  );
  process.exit(1);
}

const what = process.argv[2];
if (what === 'sources') process.stdout.write(sources().join(' '));
else if (what === 'openblas-include') process.stdout.write(openblas().include);
else if (what === 'openblas-lib') process.stdout.write(openblas().lib);
else {
  process.stderr.write('usage: build-config.cjs sources|openblas-include|openblas-lib\n');
  process.exit(2);
}
