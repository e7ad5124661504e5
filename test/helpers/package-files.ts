/**
 * What the npm tarball may hold, checked against `npm pack --json`'s file list by
 * test/install.test.ts (the repository as it stands) and test/prebuild.test.ts (a real pack with
 * its prebuilt binary): the compiled library with its declarations and source maps, the
 * TypeScript sources those maps point at, what a source build needs, the install scripts and the
 * prebuilt binaries. Nothing else: no tests, fixtures, benchmarks, demo, CI or build output.
 */
import type { Test } from 'tap';
import { existsSync, realpathSync } from 'node:fs';
import { delimiter, join, posix } from 'node:path';

const ALLOWED = [
  /^package\.json$/,
  /^README\.md$/,
  /^LICENSE$/,
  /^binding\.gyp$/,
  /^CMakeLists\.txt$/,
  /^dist\/lib\/.+\.(js|d\.ts|js\.map)$/,
  /^lib\/.+\.ts$/,
  /^native\/.+/,
  /^scripts\/[^/]+\.cjs$/,
  /^prebuilds\/[a-z0-9]+-[a-z0-9]+\/[^/]+\.node$/,
];

export interface PackedFile {
  path: string;
  size: number;
}

/** Checks a tarball's file list; `read` gives a packed file's text (to follow source maps). */
export function checkPackedFiles(t: Test, files: PackedFile[], read: (path: string) => string): void {
  const paths = new Set(files.map((f) => f.path));
  const stray = [...paths].filter((p) => !ALLOWED.some((re) => re.test(p)));
  t.same(stray, [], 'nothing outside the package\'s folders (no test/, demo/, bench/, dist/test, .ci, build/)');
  for (const required of ['package.json', 'README.md', 'LICENSE', 'binding.gyp', 'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/lib/cli/main.js', 'scripts/install.cjs']) {
    t.ok(paths.has(required), `${required} is packed`);
  }
  t.match(read('LICENSE'), /Apache License\s+Version 2\.0/, 'LICENSE is the Apache-2.0 text package.json names');
  // Every source map's sources are in the tarball, so a debugger finds them.
  const maps = [...paths].filter((p) => p.endsWith('.js.map'));
  const missing: string[] = [];
  for (const map of maps) {
    const { sources } = JSON.parse(read(map)) as { sources: string[] };
    for (const source of sources) {
      const target = posix.normalize(posix.join(posix.dirname(map), source));
      if (!paths.has(target)) missing.push(`${map} -> ${target}`);
    }
  }
  t.ok(maps.length > 0, `${maps.length} source maps`);
  t.same(missing.slice(0, 5), [], 'each source map\'s sources are packed');
}

/** The real file of a program on PATH (npm is a link to its npm-cli.js). */
export function programOnPath(name: string): string {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return realpathSync(join(dir, name));
  }
  throw new Error(`${name} is not on PATH`);
}
