/**
 * CommonJS consumers: `require('perceiver-io')` gives the same module as `import` (the package is
 * ESM; its "require" export condition points at the same file, which Node >= 20.19 loads through
 * require(esm): one module instance, one set of types, no dual-package copies), from a `.cjs`
 * file and from a TypeScript project compiled with `"module": "commonjs"`. Needs dist/.
 */
import t, { type Test } from 'tap';
import ts from 'typescript';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fixtureDir, REPO, tempDir } from './helpers/fixtures.js';

/** A CommonJS project (no "type": "module") where `perceiver-io` resolves to this repository. */
async function commonjsProject(t: Test): Promise<string> {
  const dir = await tempDir(t, 'perceiver-cjs-');
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'cjs-consumer', private: true }));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(REPO, join(dir, 'node_modules', 'perceiver-io'), 'dir');
  return dir;
}

function run(file: string, cwd: string) {
  const r = spawnSync(process.execPath, [file], { cwd, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('the engines field asks for a Node that loads ESM through require()', async (t) => {
  const manifest = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));
  t.equal(manifest.engines.node, '>=20.19', 'require(esm) is on by default from Node 20.19');
  t.same(manifest.exports['.'].require, manifest.exports['.'].import, '"require" and "import" name the same file');
  t.equal(manifest.exports['.'].types, manifest.types, 'one declaration file for both');
});

t.test("require('perceiver-io') from a .cjs file: the same module as import, and it runs a fixture", async (t) => {
  const dir = await commonjsProject(t);
  const file = join(dir, 'check.cjs');
  writeFileSync(
    file,
    `const perceiver = require('perceiver-io');
     const { PerceiverForMaskedLM, Tensor, capabilities } = perceiver;
     (async () => {
       const esm = await import('perceiver-io');
       const sameExports = Object.keys(esm).filter((k) => k !== 'default').sort().join() === Object.keys(perceiver).filter((k) => k !== 'default').sort().join();
       const model = await PerceiverForMaskedLM.fromPretrained(${JSON.stringify(fixtureDir('text-mlm'))});
       const out = await model.forward({ inputs: new Tensor('int64', [1, 3], new BigInt64Array([4n, 70n, 5n])) });
       await model.dispose();
       console.log(JSON.stringify({
         sameExports,
         sameClass: esm.PerceiverForMaskedLM === PerceiverForMaskedLM,
         exports: Object.keys(perceiver).length,
         cpu: capabilities().cpu.available,
         shape: out.logits.shape,
       }));
     })().catch((error) => { console.error(error); process.exit(1); });`,
  );
  const r = run(file, dir);
  t.equal(r.status, 0, `runs (${r.stderr.trim().slice(0, 400)})`);
  t.notMatch(r.stderr, /ExperimentalWarning|ERR_REQUIRE_ESM|ERR_PACKAGE_PATH_NOT_EXPORTED/, 'no warning, no export error');
  const report = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
  t.equal(report.sameExports, true, 'require and import see the same export names');
  t.equal(report.sameClass, true, 'and the same classes (one module instance)');
  t.ok(report.exports > 50, `${report.exports} exports`);
  t.equal(report.cpu, true);
  t.same(report.shape, [1, 48, 262], 'a forward on the text-mlm fixture');
});

t.test('a TypeScript project with "module": "commonjs" type-checks (strict) and runs', async (t) => {
  const dir = await commonjsProject(t);
  const source = join(dir, 'index.ts');
  writeFileSync(
    source,
    `import { PerceiverForMaskedLM, PerceiverTokenizer, InvalidArgumentError, type Capabilities, capabilities } from 'perceiver-io';

     async function main(): Promise<void> {
       const caps: Capabilities = capabilities();
       const tokenizer = new PerceiverTokenizer();
       const model = await PerceiverForMaskedLM.fromPretrained(${JSON.stringify(fixtureDir('text-mlm'))});
       const { inputIds, attentionMask } = tokenizer.call('Hello world', { padding: 'max_length', maxLength: 48 });
       const { logits } = await model.forward({ inputs: inputIds, attentionMask });
       const shape: readonly number[] = logits!.shape;
       let typed = false;
       try {
         tokenizer.call('x', { maxLength: -1 });
       } catch (error) {
         typed = error instanceof InvalidArgumentError;
       }
       await model.dispose();
       console.log(JSON.stringify({ shape, cpu: caps.cpu.available, typed }));
     }
     main().catch((error: unknown) => { console.error(error); process.exit(1); });`,
  );
  const options: ts.CompilerOptions = {
    strict: true,
    module: ts.ModuleKind.CommonJS,
    target: ts.ScriptTarget.ES2022,
    esModuleInterop: true,
    types: ['node'],
    typeRoots: [join(REPO, 'node_modules', '@types')],
    outDir: join(dir, 'out'),
  };
  const program = ts.createProgram([source], options);
  const emitted = program.emit();
  const diagnostics = [...ts.getPreEmitDiagnostics(program), ...emitted.diagnostics];
  const host: ts.FormatDiagnosticsHost = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => dir, getNewLine: () => '\n' };
  t.equal(diagnostics.length, 0, `compiles${diagnostics.length ? `:\n${ts.formatDiagnostics(diagnostics.slice(0, 5), host)}` : ''}`);
  const js = readFileSync(join(dir, 'out', 'index.js'), 'utf8');
  t.match(js, /require\("perceiver-io"\)/, 'the output is CommonJS: a require() call');
  const r = run(join(dir, 'out', 'index.js'), dir);
  t.equal(r.status, 0, `runs (${r.stderr.trim().slice(0, 400)})`);
  const report = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
  t.same(report, { shape: [1, 48, 262], cpu: true, typed: true }, 'a forward, and errors are the same classes');
});
