/**
 * `perceiver-io infer`: the tensors-in / tensors-out round trip, and one clear line plus a
 * non-zero exit on every error.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, serializeSafetensors, Tensor } from '../lib/index.js';
import { assertClose, fixtureDir, fixtureIo, REPO, tempDir } from './helpers/fixtures.js';

const manifest = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));
const BIN = join(REPO, manifest.bin['perceiver-io']);

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

for (const name of ['text-mlm', 'text-classification']) {
  t.test(`infer round trip on ${name}`, async (t) => {
    const dir = await tempDir(t);
    const output = join(dir, 'out.safetensors');
    const r = cli(['infer', '--model', fixtureDir(name), '--inputs', join(fixtureDir(name), 'io.safetensors'), '--output', output, '--device', 'cpu', '--dtype', 'float32']);
    t.equal(r.status, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
    const out = (await readSafetensors(output)).tensors;
    const io = await fixtureIo(name);
    t.equal(out.get('logits')?.dtype, 'float32');
    t.equal(out.get('last_hidden_state')?.dtype, 'float32');
    assertClose(t, out.get('logits'), io.get('expected.logits'), 'logits');
    const lastHidden = [...io.keys()].filter((k) => k.startsWith('hidden.')).length - 1;
    assertClose(t, out.get('last_hidden_state'), io.get(`hidden.${lastHidden}`), 'last_hidden_state');
  });
}

t.test('errors: one line on stderr, a non-zero exit, never a stack or a signal', async (t) => {
  const dir = await tempDir(t);
  const io = join(fixtureDir('text-mlm'), 'io.safetensors');
  const out = join(dir, 'out.safetensors');
  const garbage = join(dir, 'garbage.safetensors');
  writeFileSync(garbage, Buffer.from('definitely not a safetensors file'));
  const noInput = join(dir, 'no-input.safetensors');
  writeFileSync(noInput, serializeSafetensors({ other: Tensor.zeros('int64', [1, 4]) }));
  const badIds = join(dir, 'bad-ids.safetensors');
  writeFileSync(badIds, serializeSafetensors({ input: Tensor.from('int64', [1, 2, 999], [1, 3]) }));
  const cases: [string, string[], number, RegExp][] = [
    ['no command', [], 2, /Usage/],
    ['unknown command', ['explode'], 2, /unknown command "explode"/],
    ['missing --output', ['infer', '--model', fixtureDir('text-mlm'), '--inputs', io], 2, /needs --output/],
    ['unknown option', ['infer', '--modle', 'x'], 2, /modle/],
    ['missing model folder', ['infer', '--model', join(dir, 'nope'), '--inputs', io, '--output', out], 1, /config\.json/],
    ['corrupt inputs', ['infer', '--model', fixtureDir('text-mlm'), '--inputs', garbage, '--output', out], 1, /garbage\.safetensors/],
    ['no "input" tensor', ['infer', '--model', fixtureDir('text-mlm'), '--inputs', noInput, '--output', out], 1, /"input" \(or "input\.<modality>"\) tensor/],
    ['token id out of range', ['infer', '--model', fixtureDir('text-mlm'), '--inputs', badIds, '--output', out], 1, /\[0, 262\)/],
    ['unavailable device', ['infer', '--model', fixtureDir('text-mlm'), '--inputs', io, '--output', out, '--device', 'cuda'], 1, /cuda/],
    ['bad dtype', ['infer', '--model', fixtureDir('text-mlm'), '--inputs', io, '--output', out, '--dtype', 'int4'], 1, /dtype/],
  ];
  for (const [what, args, status, message] of cases) {
    const r = cli(args);
    t.equal(r.signal, null, `${what}: no signal`);
    t.equal(r.status, status, `${what}: exit ${status}`);
    const lines = r.stderr.trim().split('\n');
    if (status === 2 && what === 'no command') {
      t.match(r.stderr, message, `${what}: prints usage on stderr`);
      continue;
    }
    t.equal(lines.length, 1, `${what}: one line (${r.stderr.trim()})`);
    t.match(lines[0], /^perceiver-io: /, `${what}: prefixed`);
    t.match(lines[0], message, `${what}: says what is wrong`);
    t.notMatch(r.stderr, /\n\s+at /, `${what}: no stack trace`);
  }
});

t.test('--help and --version', async (t) => {
  const help = cli(['--help']);
  t.equal(help.status, 0);
  t.match(help.stdout, /^  infer\s+run /m);
  const version = cli(['--version']);
  t.equal(version.status, 0);
  t.equal(version.stdout.trim(), manifest.version);
});
