/**
 * Checkpoints that ship only pytorch_model.bin: loaded through AutoModel and the CLI to the same
 * outputs as their safetensors twins, converted by `perceiver-io convert`, and hostile ones refused.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AutoModel, loadCheckpointWeights, readSafetensors, Tensor, UnsafePickleError } from '../lib/index.js';
import { makeZip } from '../bench/zip.js';
import { fixtureDir, fixtureIo, FIXTURES, REPO, tempDir } from './helpers/fixtures.js';

const BIN = (name: string) => join(FIXTURES, '..', 'fixtures-bin', name);
const CLI = join(REPO, JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).bin['perceiver-io']);

function sameBytes(a: Tensor, b: Tensor): boolean {
  return a.dtype === b.dtype && a.shape.join() === b.shape.join() && Buffer.from(a.bytes()).equals(Buffer.from(b.bytes()));
}

for (const name of ['text-mlm', 'text-classification', 'image-learned', 'image-fourier', 'image-conv', 'optical-flow', 'multimodal-autoencoding']) {
  t.test(`${name}: a pytorch_model.bin folder gives the safetensors twin's outputs`, async (t) => {
    const binModel = await AutoModel.fromPretrained(BIN(name));
    const stModel = await AutoModel.fromPretrained(fixtureDir(name));
    t.teardown(async () => {
      await binModel.dispose();
      await stModel.dispose();
    });
    t.equal(binModel.constructor, stModel.constructor, 'the same head');
    const io = await fixtureIo(name);
    const modalities = [...io.keys()].filter((k) => k.startsWith('input.')).map((k) => k.slice(6));
    const inputs = modalities.length ? Object.fromEntries(modalities.map((m) => [m, io.get(`input.${m}`)!])) : io.get('input')!;
    const points = [...io.keys()].filter((k) => k.startsWith('call.subsampled_output_points.'));
    const call = {
      inputs,
      attentionMask: io.get('call.attention_mask'),
      subsampledOutputPoints: points.length ? Object.fromEntries(points.map((k) => [k.split('.').pop()!, io.get(k)!])) : undefined,
    };
    const a = await binModel.forward(call);
    const b = await stModel.forward(call);
    const logits = (x: unknown): Record<string, Tensor> => (x instanceof Tensor ? { '': x } : (x as Record<string, Tensor>));
    for (const [key, tensor] of Object.entries(logits(b.logits))) {
      t.ok(sameBytes(logits(a.logits)[key]!, tensor), `logits${key ? '.' + key : ''}: identical`);
    }
  });
}

t.test('perceiver-io convert writes model.safetensors holding the same tensors', async (t) => {
  const out = await tempDir(t);
  const r = spawnSync(process.execPath, [CLI, 'convert', '--model', BIN('image-conv'), '--out', out], { encoding: 'utf8' });
  t.equal(r.status, 0, `exit 0 (${r.stderr.trim()})`);
  t.match(r.stderr, /converted \d+ tensors/);
  t.ok(existsSync(join(out, 'config.json')), 'config.json copied along');
  const converted = (await readSafetensors(join(out, 'model.safetensors'))).tensors;
  const twin = (await readSafetensors(join(fixtureDir('image-conv'), 'model.safetensors'))).tensors;
  t.same([...converted.keys()].sort(), [...twin.keys()].sort(), 'the same tensor names');
  t.ok([...twin].every(([k, v]) => sameBytes(converted.get(k)!, v)), 'the same dtypes, shapes and bytes');
  const again = spawnSync(process.execPath, [CLI, 'convert', '--model', BIN('image-conv'), '--out', out], { encoding: 'utf8' });
  t.equal(again.status, 1, 'an existing model.safetensors is not replaced without --force');
  t.match(again.stderr, /already exists/);
  const forced = spawnSync(process.execPath, [CLI, 'convert', '--model', BIN('image-conv'), '--out', out, '--force'], { encoding: 'utf8' });
  t.equal(forced.status, 0, '--force replaces it');
  const infer = spawnSync(process.execPath, [CLI, 'infer', '--model', BIN('text-mlm'), '--inputs', join(fixtureDir('text-mlm'), 'io.safetensors'), '--output', join(out, 'o.safetensors')], { encoding: 'utf8' });
  t.equal(infer.status, 0, `infer runs straight from a .bin folder (${infer.stderr.trim()})`);
});

t.test('a hostile pytorch_model.bin is refused by AutoModel and the CLI, and runs nothing', async (t) => {
  const dir = await tempDir(t);
  copyFileSync(join(fixtureDir('text-mlm'), 'config.json'), join(dir, 'config.json'));
  const tripwire = `/tmp/perceiver-pwned-load-${process.pid}`;
  // protocol 2: GLOBAL 'os system', the command, TUPLE1, REDUCE, STOP
  const command = Buffer.from(`touch ${tripwire}`);
  const pickle = Buffer.concat([
    Buffer.from([0x80, 0x02]),
    Buffer.from('cos\nsystem\n'),
    Buffer.from([0x58]),
    Buffer.from(Uint32Array.of(command.length).buffer),
    command,
    Buffer.from([0x85, 0x52, 0x2e]),
  ]);
  writeFileSync(join(dir, 'pytorch_model.bin'), makeZip([{ name: 'archive/data.pkl', data: pickle }, { name: 'archive/version', data: Buffer.from('3\n') }]));
  const error = await loadCheckpointWeights(dir).catch((e: unknown) => e);
  t.type(error, UnsafePickleError);
  t.match((error as UnsafePickleError).refused, /os\.system/);
  await t.rejects(AutoModel.fromPretrained(dir), UnsafePickleError);
  const r = spawnSync(process.execPath, [CLI, 'convert', '--model', dir], { encoding: 'utf8' });
  t.equal(r.status, 1);
  t.match(r.stderr.trim(), /^perceiver-io: .*os\.system/);
  t.notOk(existsSync(tripwire), 'nothing was executed');
});
