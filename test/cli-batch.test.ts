/**
 * Batch CLI polish: files of a kind the model does not read are left out before the job with one
 * summary line (not one "skipped" line each); a missing path on the command line is skipped and
 * counted; embed and classify word one failure the same way.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readEmbeddings } from '../lib/index.js';
import { fixtureDir, REPO, tempDir } from './helpers/fixtures.js';

const BIN = join(REPO, JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')).bin['perceiver-io']);

function cli(args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 }, (error, _stdout, stderr) => {
      resolve({ status: error ? (typeof error.code === 'number' ? error.code : null) : 0, stderr });
    });
  });
}

t.test('a text model on a folder with images and videos, and a missing path', async (t) => {
  const dir = await tempDir(t);
  const input = join(dir, 'in');
  await mkdir(input);
  for (let i = 0; i < 3; i++) await writeFile(join(input, `note-${i}.txt`), `note number ${i}`);
  // Never opened: their extension is enough to leave them out.
  for (let i = 0; i < 30; i++) await writeFile(join(input, `photo-${i}.png`), 'not even a PNG');
  await writeFile(join(input, 'clip.mp4'), 'not a video');
  // A text file that is not UTF-8: unreadable, one line.
  await writeFile(join(input, 'latin1.txt'), Buffer.from([0x63, 0x61, 0x66, 0xe9, 0xff, 0xfe]));
  const missing = join(dir, 'no-such-file.txt');

  const lines: Record<string, string[]> = {};
  for (const [task, model] of [['embed', 'text-mlm'], ['classify', 'text-classification']] as const) {
    const out = join(dir, `out-${task}`);
    const r = await cli([task, '--model', fixtureDir(model), '--out', out, input, missing]);
    t.equal(r.status, 0, `${task}: exit 0 (stderr: ${r.stderr.trim()})`);
    const stderr = r.stderr.split('\n').filter(Boolean);
    lines[task] = stderr;
    const ignored = stderr.filter((line) => line.includes('ignored:'));
    t.same(ignored, [`perceiver-io ${task}: 30 images and 1 video ignored: this model reads text files`], `${task}: one line for the files of other kinds`);
    t.notOk(stderr.some((line) => /photo-|clip\.mp4/.test(line)), `${task}: no line per ignored file`);
    t.same(stderr.filter((line) => line.includes('not found, skipped')), [`perceiver-io ${task}: 1 input not found, skipped: ${missing}`], `${task}: the missing path, skipped`);
    const skipped = stderr.filter((line) => line.includes('skipped: ') && !line.includes('not found'));
    t.equal(skipped.length, 1, `${task}: one line for the one unreadable file`);
    t.match(skipped[0], new RegExp(`^perceiver-io ${task}: skipped: .*latin1\\.txt`), `${task}: the unreadable file's line`);
    const summary = stderr.at(-1)!;
    t.match(summary, new RegExp(`^perceiver-io ${task}: 4 items: 3 written in 1 part, 0 already done, 1 unreadable, 31 ignored \\(kind\\), 1 input not found, 0 left`), `${task}: the summary counts each (${summary})`);
    const rows = await readEmbeddings(out);
    t.same(rows.map((row) => row.path).sort(), [0, 1, 2].map((i) => join(input, `note-${i}.txt`)), `${task}: the text files written`);
  }
  // One failure, one wording: the unreadable file's line differs only by the command's name.
  const unreadable = (task: string) => lines[task]!.find((line) => line.includes('latin1.txt'))!.replace(`perceiver-io ${task}: `, '');
  t.equal(unreadable('embed'), unreadable('classify'), 'embed and classify word the unreadable file alike');

  const none = await cli(['embed', '--model', fixtureDir('text-mlm'), '--out', join(dir, 'none'), missing, join(dir, 'also-missing.txt')]);
  t.equal(none.status, 2, 'every input missing: a usage error');
  t.match(none.stderr, /^perceiver-io: none of the inputs names a file: .*no-such-file\.txt, .*also-missing\.txt \(see perceiver-io embed --help\)\n$/);
});
