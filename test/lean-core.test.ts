/**
 * A lean core: with the optional packages (lib/optional.ts) missing, the library still loads and
 * runs a model, and each feature that needs one fails with MissingDependencyError naming the
 * package, the feature and the install command; the CLI says so on one line.
 *
 * "Missing" is a module resolve hook (node:module register) that answers ERR_MODULE_NOT_FOUND for
 * those packages, exactly as Node does for a package that is not in node_modules: the library is
 * ESM, so every load of them (static or dynamic) goes through it.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { OPTIONAL_FEATURES } from '../lib/optional.js';
import { fixtureDir, fixtureIo, REPO, tempDir } from './helpers/fixtures.js';

const manifest = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));
const BIN = join(REPO, manifest.bin['perceiver-io']);
const HIDDEN = Object.keys(OPTIONAL_FEATURES);

/** Writes the hook and its registration into `dir`; returns the --import argument. */
function hideOptionalPackages(dir: string): string {
  writeFileSync(
    join(dir, 'hide.mjs'),
    `const HIDDEN = new Set(${JSON.stringify(HIDDEN)});
export async function resolve(specifier, context, next) {
  const name = specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0];
  if (HIDDEN.has(name)) {
    const error = new Error(\`Cannot find package '\${name}' imported from \${context.parentURL}\`);
    error.code = 'ERR_MODULE_NOT_FOUND';
    throw error;
  }
  return next(specifier, context);
}
`,
  );
  writeFileSync(join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister('./hide.mjs', import.meta.url);\n`);
  return pathToFileURL(join(dir, 'register.mjs')).href;
}

function run(args: string[], cwd: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd, encoding: 'utf8', timeout: 120_000 }, (error, stdout, stderr) => {
      resolve({ status: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
    });
  });
}

t.test('the core runs without the optional packages; each feature names what to install', async (t) => {
  const dir = await tempDir(t);
  const hook = hideOptionalPackages(dir);
  writeFileSync(join(dir, 'input.txt'), 'some text to embed');
  const script = join(dir, 'lean.mjs');
  writeFileSync(
    script,
    `import * as lib from ${JSON.stringify(pathToFileURL(join(REPO, 'dist/lib/index.js')).href)};
const report = {};
// The hook is in place: the packages really cannot be loaded.
report.hidden = await import('fastify').then(() => 'loaded', (e) => e.code);
const model = await lib.AutoModel.fromPretrained(${JSON.stringify(fixtureDir('text-mlm'))});
const io = await lib.readSafetensors(${JSON.stringify(join(fixtureDir('text-mlm'), 'io.safetensors'))});
const out = await model.forward({ inputs: io.tensors.get('input') });
report.logits = { shape: out.logits.shape, head: Array.from(out.logits.data.slice(0, 4)) };
const failure = async (what, f) => {
  try { await f(); report[what] = 'no error'; }
  catch (e) { report[what] = { name: e.name, code: e.code, packageName: e.packageName, feature: e.feature, install: e.install, message: e.message, isMissing: e instanceof lib.MissingDependencyError }; }
};
await failure('serve', () => lib.serve(model, { port: 0 }));
const items = await lib.discoverItems([${JSON.stringify(join(dir, 'input.txt'))}]);
await failure('parquet', () => lib.runEmbedJob({ models: [model], task: 'embed', items, outDir: ${JSON.stringify(join(dir, 'parts'))} }));
await failure('queue', () => lib.enqueueAndWait({ queue: 'redis://127.0.0.1:1', model: ${JSON.stringify(fixtureDir('text-mlm'))}, task: 'embed', inputs: [${JSON.stringify(join(dir, 'input.txt'))}], outDir: ${JSON.stringify(join(dir, 'queued'))} }));
await failure('audio', () => lib.decodeAudio(lib.encodeWav(new Float32Array(160), 16000)));
await model.dispose();
process.stdout.write(JSON.stringify(report));
`,
  );
  const r = await run(['--import', hook, script], dir);
  t.equal(r.status, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
  const report = JSON.parse(r.stdout);
  t.equal(report.hidden, 'ERR_MODULE_NOT_FOUND', 'the optional packages cannot be loaded');
  const expected = (await fixtureIo('text-mlm')).get('expected.logits')!;
  t.same(report.logits.shape, expected.shape, 'the core runs a model');
  const head = Array.from((expected.data as Float32Array).slice(0, 4));
  for (let i = 0; i < head.length; i++) t.ok(Math.abs(report.logits.head[i] - head[i]!) < 1e-3, `logit ${i} as expected`);

  const cases: [string, string[]][] = [
    ['serve', ['fastify', 'prom-client']],
    ['parquet', ['apache-arrow', 'parquet-wasm']],
    ['queue', ['ioredis', 'bullmq']],
    ['audio', ['audio-decode']],
  ];
  for (const [what, packages] of cases) {
    const e = report[what];
    t.equal(e.name, 'MissingDependencyError', `${what}: MissingDependencyError (${JSON.stringify(e)})`);
    t.equal(e.isMissing, true, `${what}: instanceof MissingDependencyError`);
    t.equal(e.code, 'ERR_PERCEIVER_MISSING_DEPENDENCY', `${what}: its code`);
    t.ok(packages.includes(e.packageName), `${what}: names ${e.packageName}`);
    t.equal(e.feature, OPTIONAL_FEATURES[e.packageName as keyof typeof OPTIONAL_FEATURES], `${what}: names the feature`);
    t.equal(e.install, `npm install ${e.packageName}@"${manifest.optionalDependencies[e.packageName]}"`, `${what}: the install command, with the tested range`);
    t.match(e.message, e.install, `${what}: the message says what to run`);
  }
});

t.test('the CLI says what to install, on one line, before loading a model', async (t) => {
  const dir = await tempDir(t);
  const hook = hideOptionalPackages(dir);
  const cases: [string[], string][] = [
    [['serve', '--model', join(dir, 'no-such-model'), '--port', '0'], 'fastify'],
    [['embed', '--model', join(dir, 'no-such-model'), '--out', join(dir, 'out'), dir], 'apache-arrow'],
    [['worker', '--queue', 'redis://127.0.0.1:1', '--allow-root', dir], 'bullmq'],
  ];
  for (const [args, first] of cases) {
    const r = await run(['--import', hook, BIN, ...args], dir);
    t.equal(r.status, 1, `${args[0]}: exit 1`);
    const lines = r.stderr.trim().split('\n');
    t.equal(lines.length, 1, `${args[0]}: one line (${r.stderr.trim()})`);
    t.match(lines[0], new RegExp(`^perceiver-io: .*needs the "[a-z-]+" package, which is not installed\\. Run \`npm install [a-z-]+@`), `${args[0]}: what to run`);
    t.match(lines[0], /needs the "(fastify|prom-client|apache-arrow|parquet-wasm|bullmq|ioredis)"/, `${args[0]}: names a package it needs (${first} or its partner)`);
    t.notMatch(lines[0], /no-such-model/, `${args[0]}: before the model is looked at`);
  }
});
