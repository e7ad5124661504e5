/**
 * Model lifetime and the event loop: dispose semantics, concurrent forwards, forwards off the main
 * thread, worker threads, and a clean exit with live models.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import {
  AutoModel,
  capabilities,
  DisposedError,
  PerceiverConfig,
  PerceiverForMaskedLM,
  RandomWeightStore,
  Tensor,
} from '../lib/index.js';
import { fixtureDir, fixtureIo, REPO } from './helpers/fixtures.js';

const MLM = fixtureDir('text-mlm');
/** Child processes and workers load the compiled package (npm test builds it first). */
const DIST_ENTRY = pathToFileURL(join(REPO, 'dist', 'lib', 'index.js')).href;

t.test('capabilities() reports each backend and why it is unavailable', async (t) => {
  const caps = capabilities();
  t.equal(caps.cpu.compiled, true);
  t.equal(caps.cpu.available, true);
  t.match(caps.cpu.gemm, /^(avx512|avx512-bf16|avx2|scalar)$/, 'the products name the micro-kernels they run');
  t.ok(caps.cpu.threads >= 1);
  t.equal(typeof caps.cuda.compiled, 'boolean');
  t.equal(typeof caps.cuda.available, 'boolean');
  if (!caps.cuda.available) t.match(caps.cuda.reason, /\S/, 'an unavailable CUDA says why');
});

t.test('dispose is idempotent, Symbol.asyncDispose works, and use after dispose throws DisposedError', async (t) => {
  const io = await fixtureIo('text-mlm');
  const model = await AutoModel.fromPretrained(MLM);
  await model.forward({ inputs: io.get('input')! });
  await model.dispose();
  await model.dispose();
  t.equal(model.disposed, true);
  await t.rejects(model.forward({ inputs: io.get('input')! }), DisposedError);
  await t.rejects(model.loadWeights(new Map()), DisposedError);

  let scoped: PerceiverForMaskedLM | undefined;
  {
    await using m = await PerceiverForMaskedLM.fromPretrained(MLM);
    scoped = m;
    t.equal(m.disposed, false);
  }
  t.equal(scoped!.disposed, true, 'await using disposes at the end of the scope');
});

t.test('dispose while forwards are running lets them finish, then releases', async (t) => {
  const io = await fixtureIo('text-mlm');
  const model = await AutoModel.fromPretrained(MLM);
  const running = [1, 2, 3].map(() => model.forward({ inputs: io.get('input')!, attentionMask: io.get('call.attention_mask') }));
  const disposed = model.dispose();
  await t.rejects(model.forward({ inputs: io.get('input')! }), DisposedError, 'new forwards are refused at once');
  const results = await Promise.all(running);
  await disposed;
  for (const r of results) t.same((r.logits as Tensor).shape, [3, 48, 262], 'a forward started before dispose completes');
  t.same(Array.from((results[0]!.logits as Tensor<'float32'>).data.slice(0, 50)), Array.from((results[2]!.logits as Tensor<'float32'>).data.slice(0, 50)), 'concurrent forwards agree');
});

t.test('forwards run off the main thread: timers keep firing during a long forward', async (t) => {
  // A model large enough that one forward takes a good fraction of a second on two cores.
  const config = new PerceiverConfig({
    num_latents: 128, d_latents: 512, d_model: 256, num_self_attends_per_block: 12, num_self_attention_heads: 8,
    num_cross_attention_heads: 8, max_position_embeddings: 1024, architectures: ['PerceiverForMaskedLM'],
  });
  const model = await new PerceiverForMaskedLM(config).loadWeights(new RandomWeightStore(7));
  t.teardown(() => model.dispose());
  const ids = new Tensor('int64', [4, 1024], new BigInt64Array(4 * 1024).fill(70n));
  let ticks = 0;
  let longestGap = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    longestGap = Math.max(longestGap, now - last);
    last = now;
    ticks++;
  }, 5);
  const start = performance.now();
  const out = await model.forward({ inputs: ids });
  const elapsed = performance.now() - start;
  clearInterval(timer);
  t.same(out.logits!.shape, [4, 1024, 262]);
  t.ok(elapsed > 100, `the forward took long enough to tell (${elapsed.toFixed(0)} ms)`);
  t.ok(ticks >= elapsed / 5 / 4, `timers fired ${ticks} times during ${elapsed.toFixed(0)} ms`);
  t.ok(longestGap < Math.max(100, elapsed / 3), `the event loop never stalled for long (longest gap ${longestGap.toFixed(0)} ms)`);
});

t.test('the addon loads and runs in worker threads, each with its own environment', async (t) => {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(workerData.entry).then(async (lib) => {
      const model = await lib.AutoModel.fromPretrained(workerData.dir);
      const ids = new lib.Tensor('int64', [1, 4], new BigInt64Array([4n, 10n, 11n, 5n]));
      const out = await model.forward({ inputs: ids });
      await model.dispose();
      parentPort.postMessage(Array.from(out.logits.data.slice(0, 8)));
    }).catch((e) => parentPort.postMessage('error: ' + e.message));`;
  const run = () =>
    new Promise<unknown>((resolve, reject) => {
      const w = new Worker(code, { eval: true, workerData: { entry: DIST_ENTRY, dir: MLM } });
      w.once('message', resolve);
      w.once('error', reject);
    });
  const [a, b] = await Promise.all([run(), run()]);
  t.type(a, Array, `worker result: ${String(a).slice(0, 80)}`);
  t.same(a, b, 'two workers agree');
});

t.test('exiting with live models and forwards in flight is clean', async (t) => {
  const script = `
    import { AutoModel, Tensor } from ${JSON.stringify(DIST_ENTRY)};
    const a = await AutoModel.fromPretrained(${JSON.stringify(MLM)});
    const b = await AutoModel.fromPretrained(${JSON.stringify(MLM)});
    const ids = new Tensor('int64', [2, 48], new BigInt64Array(96).fill(9n));
    await a.forward({ inputs: ids });
    for (let i = 0; i < 4; i++) b.forward({ inputs: ids });
    console.log('exiting');
    process.exit(0);`;
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  t.equal(result.signal, null, 'no signal');
  t.equal(result.status, 0, `exit code 0 (stderr: ${result.stderr.trim().slice(0, 200)})`);
  t.match(result.stdout, /exiting/);
});
