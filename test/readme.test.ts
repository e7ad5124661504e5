/**
 * The README's TypeScript is real: every ```ts block compiles under `strict` against the package's
 * published types (dist/lib/*.d.ts, reached as `perceiver-io` through a node_modules link, as a
 * user's project reaches it), and the blocks that load only the repository's fixtures
 * (`test/fixtures/...`) also run. Needs dist/ (`npm run build`; `npm test` builds it first).
 */
import t, { type Test } from 'tap';
import ts from 'typescript';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, tempDir } from './helpers/fixtures.js';

interface Block {
  line: number;
  code: string;
}

/** The fenced ```ts / ```typescript blocks of a Markdown file, with the line each starts on. */
function typescriptBlocks(markdown: string): Block[] {
  const blocks: Block[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i]!)) continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && !/^```\s*$/.test(lines[end]!)) end++;
    blocks.push({ line: start + 1, code: lines.slice(start, end).join('\n') });
    i = end;
  }
  return blocks;
}

const README = readFileSync(join(REPO, 'README.md'), 'utf8');
const blocks = typescriptBlocks(README);

t.test('the README has TypeScript examples, and the extractor finds them', async (t) => {
  t.ok(blocks.length >= 4, `${blocks.length} TypeScript blocks found`);
  t.same(typescriptBlocks('a\n```ts\nconst x = 1;\n```\n```sh\nls\n```\n```typescript\nlet y;\n```\n'), [
    { line: 3, code: 'const x = 1;' },
    { line: 9, code: 'let y;' },
  ]);
});

/** A scratch project where `perceiver-io` resolves to this repository, as it would once installed. */
async function consumerProject(t: Test): Promise<string> {
  const dir = await tempDir(t, 'perceiver-readme-');
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'readme-examples', private: true, type: 'module' }));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(REPO, join(dir, 'node_modules', 'perceiver-io'), 'dir');
  return dir;
}

const COMPILER_OPTIONS: ts.CompilerOptions = {
  strict: true,
  noEmit: true,
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
  types: ['node'],
  typeRoots: [join(REPO, 'node_modules', '@types')],
  // The package's own declarations are checked (not only the examples against them).
  skipLibCheck: false,
};

t.test('every TypeScript block compiles under strict against the published types', async (t) => {
  t.ok(existsSync(join(REPO, 'dist', 'lib', 'index.d.ts')), 'dist/lib/index.d.ts exists (npm run build)');
  const dir = await consumerProject(t);
  const files = blocks.map((b) => {
    const file = join(dir, `readme-line-${b.line}.ts`);
    writeFileSync(file, b.code + '\n');
    return file;
  });
  const program = ts.createProgram(files, COMPILER_OPTIONS);
  const diagnostics = ts.getPreEmitDiagnostics(program);
  const host: ts.FormatDiagnosticsHost = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => dir, getNewLine: () => '\n' };
  for (const [i, file] of files.entries()) {
    const own = diagnostics.filter((d) => d.file?.fileName === file);
    t.equal(own.length, 0, `README.md block at line ${blocks[i]!.line} compiles${own.length ? `:\n${ts.formatDiagnostics(own, host)}` : ''}`);
  }
  const elsewhere = diagnostics.filter((d) => !files.includes(d.file?.fileName ?? ''));
  t.equal(elsewhere.length, 0, `no errors in the package's declarations${elsewhere.length ? `:\n${ts.formatDiagnostics(elsewhere.slice(0, 5), host)}` : ''}`);
});

t.test('the blocks that use only the fixtures run', async (t) => {
  const runnable = blocks.filter((b) => b.code.includes("'test/fixtures/"));
  t.ok(runnable.length >= 1, `${runnable.length} block(s) run on the fixtures`);
  const dir = await consumerProject(t);
  for (const block of runnable) {
    const file = join(dir, `readme-line-${block.line}.mjs`);
    const js = ts.transpileModule(block.code, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext } }).outputText;
    writeFileSync(file, js);
    // From the repository's root, where the block's relative fixture paths point.
    const run = spawnSync(process.execPath, [file], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
    t.equal(run.status, 0, `README.md block at line ${block.line} runs${run.status === 0 ? '' : `: ${run.stderr.trim().slice(-600)}`}`);
    t.match(run.stdout, /\S/, 'and prints its result');
  }
});
