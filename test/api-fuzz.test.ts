/**
 * A short pass of the public-API fuzz (bench/api_fuzz.ts; the long run is `npm run bench:api-fuzz`):
 * every entry point exported from lib/index.ts, called with random arguments on the fixture
 * models, returns or fails with a PerceiverError (thrown or as a rejection), never anything else,
 * and never hangs. Untyped errors found in other helpers' modules are listed as known (see
 * KNOWN_ELSEWHERE) and reported here as comments.
 */
import t from 'tap';
import { API_HANG_MS, apiFuzz, KNOWN_ELSEWHERE, setup, teardown } from '../bench/api_fuzz.js';

const CASES = 500;
const SEED = 20261202;

t.test(`${CASES} random calls of the public API`, async (t) => {
  const ctx = await setup();
  t.teardown(() => teardown(ctx));
  const r = await apiFuzz(ctx, CASES, SEED);
  t.equal(r.runs, CASES);
  t.ok(Object.keys(r.byEntry).length >= 50, `${Object.keys(r.byEntry).length} entry points reached`);
  t.ok(r.returned > 0, `${r.returned} calls returned a result`);
  t.ok(r.rejected > 0, `${r.rejected} calls failed with a PerceiverError`);
  t.ok(r.userThrown > 0, `${r.userThrown} calls let the caller's own getter exception through unchanged`);
  t.same(r.findings, [], 'no untyped error, no hang');
  t.ok(r.slowestMs < API_HANG_MS, `slowest call ${r.slowestMs.toFixed(0)} ms (${r.slowestEntry})`);
  for (const [what, count] of Object.entries(r.known)) {
    t.ok(KNOWN_ELSEWHERE.some((k) => k.what === what), `known, owned by another module (${count}x): ${what}`);
  }
});

t.test('what the fuzz found, one call each: typed errors now', async (t) => {
  const api = await import('../lib/index.js');
  const { fixtureDir } = await import('./helpers/fixtures.js');
  const invalid = (argument: string) => ({ name: 'InvalidArgumentError', argument });
  t.throws(() => api.Tensor.zeros('nope' as never, [1]), invalid('dtype'));
  t.throws(() => api.Tensor.from('int64', [1.5]), invalid('values[0]'), 'BigInt(1.5) was a RangeError');
  t.throws(() => api.Tensor.from('float32', [Symbol('x')] as never), invalid('values[0]'));
  t.throws(() => api.Tensor.zeros('float32', [2 ** 26, 2 ** 26]), invalid('shape'), 'an allocation too large was a RangeError');
  t.throws(() => new api.Tensor('float32', [1, NaN] as never, new Float32Array(1)), invalid('shape'));
  t.throws(() => api.Tensor.zeros('float32', [2]).get(2), invalid('i'));
  const detached = api.Tensor.zeros('float32', [1, 3, 8, 8]);
  structuredClone(detached.data.buffer, { transfer: [detached.data.buffer as ArrayBuffer] });
  t.throws(() => detached.bytes(), invalid('tensor'), 'a view of a detached buffer was a TypeError');
  t.throws(() => new api.WeightStore(null as never), invalid('tensors'));
  t.throws(() => new api.PerceiverForImageClassificationLearned(undefined as never), invalid('config'));
  t.throws(() => new api.PerceiverBasicDecoder(new api.PerceiverConfig(), { outputNumChannels: 4, outputIndexDims: 'x' as never }), invalid('options.outputIndexDims'));
  t.throws(() => new api.PerceiverConfig({ num_latents: 10n as never }), { name: 'ConfigError', message: /num_latents must be a positive integer, got bigint 10/ });
  t.throws(() => new api.PerceiverEncoding({} as never, {} as never), invalid('handle'));
  await t.rejects(api.PerceiverConfig.fromPretrained(42 as never), invalid('dir'));
  await t.rejects(api.AutoModel.fromPretrained(fixtureDir('text-mlm'), null as never), invalid('options'));

  const model = await api.AutoModel.fromPretrained(fixtureDir('image-learned'));
  t.teardown(() => model.dispose());
  // Resizable buffer shrunk after the Tensor was made: the engine would read 192 floats from an empty view.
  const buffer = new (ArrayBuffer as unknown as new (n: number, o: object) => ArrayBuffer & { resize(n: number): void })(192 * 4, { maxByteLength: 1024 });
  const shrunk = new api.Tensor('float32', [1, 3, 8, 8], new Float32Array(buffer));
  buffer.resize(0);
  await t.rejects(model.forward({ inputs: shrunk }), { ...invalid('inputs'), message: /detached or resized/ });
  await t.rejects(model.upload(shrunk), invalid('tensor'));
  const shared = new Float32Array(new SharedArrayBuffer(192 * 4));
  t.same((await model.forward({ inputs: new api.Tensor('float32', [1, 3, 8, 8], shared) })).lastHiddenState.shape, [1, 16, 64], 'SharedArrayBuffer-backed inputs are read');
  // This one aborted the whole process (a fatal out-of-memory filling a 1e9-slot histogram).
  t.throws(() => api.createBatcher(model, { maxBatchSize: 1e9 }), invalid('options.maxBatchSize'));
  // And this one (V8's fatal "invalid size" growing the list of tile starts).
  t.throws(() => api.tileGrid(2 ** 53, 16, { height: 8, width: 8 }, 2), invalid('height'));
});
