/** The pipeline commands of the CLI: fill-mask, predict, flow, autoencode; each --help; usage errors exit 2 with one line. */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { readFlo } from '../lib/index.js';
import { fixtureDir, REPO, tempDir } from './helpers/fixtures.js';
import { ffmpeg, writeGradientImage, writeSolidImage } from './helpers/media.js';

const manifest = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));
const BIN = join(REPO, manifest.bin['perceiver-io']);

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

t.test('each command has its own --help', async (t) => {
  for (const command of ['fill-mask', 'predict', 'flow', 'autoencode']) {
    const r = cli([command, '--help']);
    t.equal(r.status, 0, `${command} --help exits 0`);
    t.match(r.stdout, new RegExp(`^Usage: perceiver-io ${command}`), `${command}: its own usage`);
  }
  const main = cli(['--help']).stdout;
  for (const command of ['fill-mask', 'predict', 'flow', 'autoencode']) t.match(main, new RegExp(`^  ${command} `, 'm'), `the main help lists ${command}`);
});

t.test('fill-mask and predict print JSON', async (t) => {
  const dir = await tempDir(t);
  const fill = cli(['fill-mask', '--model', fixtureDir('text-mlm'), '--top-k', '2', 'a [MASK][MASK] b']);
  t.equal(fill.status, 0, fill.stderr);
  const out = JSON.parse(fill.stdout);
  t.equal(out.masks.length, 2, 'two masks');
  t.equal(out.masks[0].length, 2, 'top-k 2');
  t.equal(out.spans.length, 1, 'one span of two');
  t.equal(out.spans[0].length, 2);
  const text = cli(['predict', '--model', fixtureDir('text-classification'), '--top-k', '3', 'some text']);
  t.equal(text.status, 0, text.stderr);
  t.same(JSON.parse(text.stdout).map((r: { label: string }) => r.label).sort(), ['LABEL_0', 'LABEL_1', 'LABEL_2']);
  const image = join(dir, 'g.png');
  await writeGradientImage(image, 20, 16);
  const img = cli(['predict', '--model', fixtureDir('image-conv'), image]);
  t.equal(img.status, 0, img.stderr);
  t.match(JSON.parse(img.stdout)[0], { label: /^LABEL_\d$/, score: Number });
  const bad = cli(['fill-mask', '--model', fixtureDir('text-mlm'), 'no mask']);
  t.equal(bad.status, 1);
  t.equal(bad.stderr.trim().split('\n').length, 1, 'one line');
  t.match(bad.stderr, /MASK/);
  t.equal(cli(['fill-mask']).status, 2, 'no text: usage error');
  t.equal(cli(['predict', 'x']).status, 2, 'predict needs --model');
  t.equal(cli(['flow', 'a.png', '--model', fixtureDir('optical-flow')]).status, 2, 'flow needs --out and two images');
  t.equal(cli(['fill-mask', '--bogus', 'x']).status, 2, 'unknown option');
});

t.test('flow A B writes the picture and the .flo; flow --video writes a video', async (t) => {
  const dir = await tempDir(t);
  const a = join(dir, 'a.png');
  const b = join(dir, 'b.jpg');
  await writeGradientImage(a, 40, 30);
  await writeSolidImage(b, 40, 30, [10, 200, 30]);
  const png = join(dir, 'flow.png');
  const flo = join(dir, 'flow.flo');
  const r = cli(['flow', a, b, '--out', png, '--flo', flo, '--model', fixtureDir('optical-flow')]);
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout), { width: 40, height: 30, files: [png, flo] });
  const meta = await sharp(png).metadata();
  t.same([meta.width, meta.height], [40, 30]);
  const field = await readFlo(flo);
  t.same([field.width, field.height], [40, 30]);

  const video = join(dir, 'in.mp4');
  await ffmpeg('-f', 'lavfi', '-i', 'testsrc=s=24x16:r=5:d=0.8', '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', video);
  const mp4 = join(dir, 'flow.mp4');
  const v = cli(['flow', '--video', video, '--out', mp4, '--model', fixtureDir('optical-flow')]);
  t.equal(v.status, 0, v.stderr);
  const summary = JSON.parse(v.stdout);
  t.same([summary.pairs, summary.fps, summary.width, summary.height], [3, 5, 24, 16], '4 frames give 3 pairs at 5 fps');
  t.ok(existsSync(mp4));
});

t.test('autoencode VIDEO --out DIR writes frames, video, audio, comparison and labels', async (t) => {
  const dir = await tempDir(t);
  const video = join(dir, 'in.mp4');
  await ffmpeg('-f', 'lavfi', '-i', 'testsrc=s=32x32:r=25:d=0.4', '-f', 'lavfi', '-i', 'sine=f=300:r=8000:d=0.4', '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-shortest', video);
  const out = join(dir, 'out');
  const r = cli(['autoencode', video, '--out', out, '--model', fixtureDir('multimodal-autoencoding'), '--chunks', '4', '--top-k', '2']);
  t.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  t.equal(summary.labels.length, 2);
  for (const f of [...summary.files.frames, summary.files.video, summary.files.audio, summary.files.comparison, summary.files.labels]) t.ok(existsSync(f), `${f.slice(out.length)} exists`);
  t.equal(cli(['autoencode', join(dir, 'missing.mp4'), '--out', out, '--model', fixtureDir('multimodal-autoencoding')]).status, 1, 'a missing video: exit 1');
});
