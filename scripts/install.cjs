#!/usr/bin/env node
// The package's install step. node-gyp-build finds a binary for this machine (a prebuilt one in
// prebuilds/<platform>-<arch>/, or an earlier build in build/Release) and checks that it loads;
// only when none does is the addon compiled with node-gyp. That build's output goes to a log
// file, and a failure prints one paragraph (what is missing, what to install, where the log is)
// instead of node-gyp's stack. Written by hand: node-gyp-build's own bin does the same steps but
// streams the build, which npm then prints whole on failure, and no library wraps it.
//
//   npm_config_build_from_source=true (npm install --build-from-source) skips the prebuilt binary.
//   PERCEIVER_BUILD_VERBOSE=1, or npm's --foreground-scripts, streams the build as it runs.
//   PERCEIVER_IO_PREBUILD=/path/to/perceiver_io.node: that binary is used, and nothing is built if it loads.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const platform = `${process.platform}-${process.arch}`;

/** Whether node-gyp-build finds a binary here that loads (run in a child: a bad binary cannot take this process down). */
function binaryLoads() {
  // PERCEIVER_IO_PREBUILD names a binary built elsewhere, which the loader takes first (lib/native/binding.ts).
  const override = process.env.PERCEIVER_IO_PREBUILD;
  const probe = override
    ? `require(${JSON.stringify(override)})`
    : `require('node-gyp-build')(${JSON.stringify(root)})`;
  const r = spawnSync(process.execPath, ['-e', probe], { cwd: root, encoding: 'utf8' });
  return { ok: r.status === 0, error: (r.stderr || '').trim().split('\n').find((l) => /Error/.test(l)) || '' };
}

/** The first of `names` on PATH, or undefined. */
function onPath(names) {
  for (const dir of (process.env.PATH || '').split(path.delimiter).filter(Boolean)) {
    for (const name of names) {
      try {
        fs.accessSync(path.join(dir, name), fs.constants.X_OK);
        return path.join(dir, name);
      } catch {
        // not here
      }
    }
  }
  return undefined;
}

/** What node-gyp needs that this machine lacks, as short phrases. */
function missingTools() {
  const missing = [];
  // CXX may carry a wrapper or flags ("ccache g++"): its first word is the program to find.
  const cxxProgram = (process.env.CXX || '').trim().split(/\s+/)[0];
  const cxx = cxxProgram ? onPath([cxxProgram]) || (path.isAbsolute(cxxProgram) && fs.existsSync(cxxProgram) ? cxxProgram : undefined) : onPath(['c++', 'g++', 'clang++']);
  if (!cxx) missing.push(cxxProgram ? `the C++ compiler CXX names (${process.env.CXX})` : 'a C++17 compiler (g++ or clang++)');
  if (!onPath(['make'])) missing.push('make');
  const python = process.env.npm_config_python || process.env.PYTHON;
  if (python ? !(onPath([python]) || (path.isAbsolute(python) && fs.existsSync(python))) : !onPath(['python3'])) missing.push(python ? `the python that PYTHON / npm_config_python names (${python})` : 'python3');
  return missing;
}

function prebuiltPlatforms() {
  try {
    return fs.readdirSync(path.join(root, 'prebuilds')).filter((d) => fs.readdirSync(path.join(root, 'prebuilds', d)).some((f) => f.endsWith('.node')));
  } catch {
    return [];
  }
}

/** Why no binary was used: one sentence. */
function noBinaryReason(loadError) {
  const because = loadError ? ` (${loadError})` : '';
  if (process.env.npm_config_build_from_source === 'true') return 'A build from source was asked for (--build-from-source).';
  if (process.env.PERCEIVER_IO_PREBUILD) return `The binary PERCEIVER_IO_PREBUILD names did not load${because}.`;
  const prebuilt = prebuiltPlatforms();
  if (prebuilt.includes(platform)) return `Its prebuilt binary for ${platform} did not load${because}.`;
  return prebuilt.length ? `It carries prebuilt binaries for ${prebuilt.join(', ')} only.` : 'It carries no prebuilt binary.';
}

/**
 * Prints the one paragraph and exits 1. `built` says whether a source build ran (and failed) or
 * could not start; `details` are the sentences of what went wrong.
 */
function fail({ loadError, built, details }, log) {
  const lines = [
    `perceiver-io: could not install its native addon for ${platform} (Node ${process.version}).`,
    noBinaryReason(loadError),
    (built ? 'Building it from source failed. ' : 'It cannot be built from source here. ') + details.join(' '),
    'To build from source, install a C++17 compiler, make and python3 (Debian/Ubuntu: apt-get install g++ make python3), then run `npm rebuild perceiver-io`.',
    'The CUDA backend is built too when nvcc is found (PERCEIVER_NO_CUDA=1 leaves it out); PERCEIVER_IO_PREBUILD=/path/to/perceiver_io.node uses a binary built elsewhere.',
  ];
  if (log) lines.push(`The build's full output: ${log}`);
  process.stderr.write(lines.join('\n  ') + '\n');
  process.exit(1);
}

/**
 * The line of a failed build that says why: a compiler's or make's error, else node-gyp's own
 * (its "gyp ERR! stack Error: ..." lines up to the stack frames, e.g. no network for the headers).
 */
function firstError(text) {
  const lines = text.split('\n');
  const compiler = lines.find((l) => !l.startsWith('gyp ') && /(\berror:|\*\*\* .*Error \d+|fatal error)/i.test(l));
  if (compiler) return compiler.trim();
  const start = lines.findIndex((l) => /^gyp ERR! stack Error: /.test(l));
  if (start >= 0) {
    const message = [];
    for (const l of lines.slice(start)) {
      const body = l.replace(/^gyp ERR! stack /, '');
      if (!l.startsWith('gyp ERR! stack ') || /^at /.test(body)) break;
      message.push(body.replace(/^Error: /, ''));
    }
    return message.join(' ');
  }
  return lines.find((l) => /^gyp ERR! /.test(l) && !/not ok/.test(l))?.replace(/^gyp ERR! /, '').trim();
}

function main() {
  const fromSource = process.env.npm_config_build_from_source === 'true';
  const loaded = fromSource ? { ok: false, error: '' } : binaryLoads();
  if (loaded.ok) return;

  const missing = missingTools();
  if (missing.length) fail({ loadError: loaded.error, built: false, details: [`Missing: ${missing.join(', ')}.`] });

  const log = path.join(os.tmpdir(), `perceiver-io-build-${process.pid}.log`);
  const verbose = process.env.PERCEIVER_BUILD_VERBOSE === '1' || process.env.npm_config_foreground_scripts === 'true';
  // npm names its own node-gyp to install scripts; node-gyp is no dependency of this package.
  let nodeGyp = process.env.npm_config_node_gyp;
  if (!nodeGyp || !fs.existsSync(nodeGyp)) {
    try {
      nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');
    } catch {
      fail({ loadError: loaded.error, built: false, details: ['node-gyp was not found: run the install through npm (npm rebuild perceiver-io), which brings its own.'] });
    }
  }
  const out = verbose ? 'inherit' : fs.openSync(log, 'w');
  // Every core (or JOBS): each source, .cu files included (one make target each, see binding.gyp),
  // is its own make job; without -j make would compile them one at a time.
  const build = spawnSync(process.execPath, [nodeGyp, 'rebuild', '--jobs', process.env.JOBS || 'max'], { cwd: root, stdio: ['ignore', out, out] });
  if (!verbose) fs.closeSync(out);
  if (build.status === 0) {
    if (!verbose) fs.rmSync(log, { force: true });
    return;
  }
  // The build's own explanations (build-config.cjs prints "perceiver-io: ..." with indented
  // lines after it, e.g. a missing library) say more than the compiler's last error.
  const text = verbose ? '' : fs.readFileSync(log, 'utf8');
  const explained = [];
  let inside = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('perceiver-io: ')) inside = true;
    else if (!/^\s+\S/.test(line)) inside = false;
    if (inside) explained.push(line.trim().replace(/^perceiver-io: /, '').replace(/([^.:;!?])$/, '$1.'));
  }
  const details = explained.length ? explained : firstError(text) ? [`The first error: ${firstError(text)}`] : [];
  fail({ loadError: loaded.error, built: true, details }, verbose ? undefined : log);
}

main();
