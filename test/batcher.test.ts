/**
 * The serving batcher: coalescing by shape, maxBatchSize and maxDelayMs, splitting the outputs
 * back per caller, backpressure, cancellation, error propagation, close() and stats; then the real
 * text-classification model batched against each item's own forward.
 */
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { AutoModel, DisposedError, InvalidArgumentError, PerceiverError, Tensor } from '../lib/index.js';
import { CancelledError, QueueFullError, createBatcher, type BatchResult } from '../lib/serving/batcher.js';
import { fixtureDir, relativeError } from './helpers/fixtures.js';

type Call = { inputs: Tensor | Record<string, Tensor>; attentionMask?: Tensor };

/** Doubles a tensor's values into float32. */
function double(x: Tensor): Tensor<'float32'> {
  const out = new Float32Array(x.size);
  for (let i = 0; i < out.length; i++) out[i] = x.get(i) * 2;
  return new Tensor('float32', x.shape, out);
}

/**
 * A fake model: records each forward's batch size, waits `delayMs` (or until released), echoes
 * inputs * 2 as logits (a record for record inputs) and inputs + mask as lastHiddenState.
 */
function fakeModel(opts: { delayMs?: number; fail?: Error; gate?: Promise<void> } = {}) {
  const calls: Call[] = [];
  const sizes: number[] = [];
  return {
    calls,
    sizes,
    async forward(call: Call) {
      calls.push(call);
      const first = call.inputs instanceof Tensor ? call.inputs : Object.values(call.inputs)[0]!;
      sizes.push(first.shape[0]!);
      if (opts.gate) await opts.gate;
      if (opts.delayMs) await sleep(opts.delayMs);
      if (opts.fail) throw opts.fail;
      const logits = call.inputs instanceof Tensor ? double(call.inputs) : Object.fromEntries(Object.entries(call.inputs).map(([k, v]) => [k, double(v)]));
      const base = call.inputs instanceof Tensor ? call.inputs : first;
      const hidden = new Float32Array(base.size);
      for (let i = 0; i < hidden.length; i++) hidden[i] = base.get(i) + (call.attentionMask ? call.attentionMask.get(i % call.attentionMask.size) * 1000 : 0);
      return { logits, lastHiddenState: new Tensor('float32', base.shape, hidden) };
    },
  };
}

const item = (values: number[], dtype: 'float32' | 'int64' = 'float32') => Tensor.from(dtype, values, [1, values.length]);
const values = (x: Tensor | Record<string, Tensor> | undefined) => [...(x as Tensor).toFloat32()];

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

t.test('concurrent same-shape requests become one forward, and each caller gets its own item back', async (t) => {
  const model = fakeModel();
  const batcher = createBatcher(model, { maxBatchSize: 16, maxDelayMs: 10 });
  const results = await Promise.all([0, 1, 2, 3, 4].map((i) => batcher.submit({ inputs: item([i, i + 10, i + 20]) })));
  t.same(model.sizes, [5], 'one forward of 5 items');
  t.same(model.calls[0]!.inputs instanceof Tensor && model.calls[0]!.inputs.shape, [5, 3], 'inputs concatenated along dim 0');
  results.forEach((r, i) => {
    t.same((r.logits as Tensor).shape, [1, 3], `item ${i}: logits batch 1`);
    t.same(values(r.logits), [2 * i, 2 * (i + 10), 2 * (i + 20)], `item ${i}: its own logits`);
    t.same(values(r.lastHiddenState), [i, i + 10, i + 20], `item ${i}: its own lastHiddenState`);
  });
  const s = batcher.stats;
  t.equal(s.requests, 5);
  t.equal(s.batches, 1);
  t.equal(s.batchSizes[5], 1, 'histogram counts one batch of 5');
  t.equal(s.queued, 0);
  t.equal(s.inFlight, 0);
  t.ok(s.totalLatencyMs > 0, 'latency accumulated');
  await batcher.close();
});

t.test('requests are grouped by shape, dtype and mask presence', async (t) => {
  const model = fakeModel();
  const batcher = createBatcher(model, { maxDelayMs: 5 });
  const mask = Tensor.from('int64', [1, 1], [1, 2]);
  const results = await Promise.all([
    batcher.submit({ inputs: item([1, 2]) }),
    batcher.submit({ inputs: item([3, 4, 5]) }),
    batcher.submit({ inputs: item([6, 7]) }),
    batcher.submit({ inputs: item([8, 9], 'int64') }),
    batcher.submit({ inputs: item([10, 11]), attentionMask: mask }),
    batcher.submit({ inputs: item([12, 13, 14]) }),
  ]);
  t.same([...model.sizes].sort(), [1, 1, 2, 2], 'four groups: f32[1,2] x2, f32[1,3] x2, int64[1,2], f32[1,2]+mask');
  t.same(values(results[0]!.logits), [2, 4]);
  t.same(values(results[1]!.logits), [6, 8, 10]);
  t.same(values(results[2]!.logits), [12, 14]);
  t.same(values(results[3]!.logits), [16, 18]);
  t.same(values(results[4]!.lastHiddenState), [1010, 1011], 'mask passed through');
  t.same(values(results[5]!.logits), [24, 26, 28]);
  const masked = model.calls.find((c) => c.attentionMask)!;
  t.same(masked.attentionMask!.shape, [1, 2]);
  t.notOk(model.calls.filter((c) => c !== masked).some((c) => 'attentionMask' in c), 'no mask key when the group has none');
  await batcher.close();
});

t.test('masks are concatenated with their inputs', async (t) => {
  const model = fakeModel();
  const batcher = createBatcher(model, { maxDelayMs: 5 });
  const [a, b] = await Promise.all([
    batcher.submit({ inputs: item([1, 2]), attentionMask: Tensor.from('int64', [1, 0], [1, 2]) }),
    batcher.submit({ inputs: item([3, 4]), attentionMask: Tensor.from('int64', [0, 1], [1, 2]) }),
  ]);
  t.same(model.sizes, [2]);
  t.same(model.calls[0]!.attentionMask!.shape, [2, 2]);
  t.same([...(model.calls[0]!.attentionMask!.data as BigInt64Array)], [1n, 0n, 0n, 1n], 'int64 mask data copied in order');
  t.same(values(a!.lastHiddenState), [1001, 2]);
  t.same(values(b!.lastHiddenState), [3, 1004]);
  await batcher.close();
});

t.test('maxBatchSize caps a batch and dispatches it at once', async (t) => {
  const model = fakeModel();
  const batcher = createBatcher(model, { maxBatchSize: 4, maxDelayMs: 10_000 });
  const pending = Array.from({ length: 8 }, (_, i) => batcher.submit({ inputs: item([i]) }));
  const started = performance.now();
  const results = await Promise.all(pending);
  t.ok(performance.now() - started < 5000, 'full batches do not wait for maxDelayMs');
  t.same(model.sizes, [4, 4]);
  results.forEach((r, i) => t.same(values(r.logits), [2 * i]));
  t.same(batcher.stats.batchSizes, [0, 0, 0, 0, 2]);
  // A ninth lone request waits for the timer; close() dispatches it without waiting.
  const lone = batcher.submit({ inputs: item([9]) });
  await sleep(20);
  t.same(model.sizes, [4, 4], 'a partial batch is not dispatched before maxDelayMs');
  await batcher.close();
  t.same(values((await lone).logits), [18], 'close() drained it');
  t.same(model.sizes, [4, 4, 1]);
});

t.test('maxDelayMs: a partial batch is dispatched once its oldest request has waited', async (t) => {
  const model = fakeModel();
  const batcher = createBatcher(model, { maxBatchSize: 16, maxDelayMs: 100 });
  const started = performance.now();
  const first = batcher.submit({ inputs: item([1]) });
  await sleep(15);
  const second = batcher.submit({ inputs: item([2]) });
  await sleep(5);
  t.same(model.sizes, [], 'nothing dispatched before the delay');
  const [a, b] = await Promise.all([first, second]);
  const waited = performance.now() - started;
  t.ok(waited >= 95, `dispatched after about maxDelayMs (${waited.toFixed(1)} ms)`);
  t.same(model.sizes, [2], 'the late request joined the oldest one');
  t.same(values(a.logits), [2]);
  t.same(values(b.logits), [4]);
  // A later request starts a new window.
  const c = await batcher.submit({ inputs: item([3]) });
  t.same(values(c.logits), [6]);
  t.same(model.sizes, [2, 1]);
  await batcher.close();
});

t.test('records of tensors (multimodal-like) are concatenated and split per modality', async (t) => {
  const model = fakeModel();
  const batcher = createBatcher(model, { maxDelayMs: 5 });
  const mk = (i: number) => ({ audio: item([i, i]), image: Tensor.from('float32', [i, i + 1, i + 2, i + 3], [1, 2, 2]) });
  const results = await Promise.all([
    batcher.submit({ inputs: mk(1) }),
    batcher.submit({ inputs: { image: mk(2).image, audio: mk(2).audio } }),
    batcher.submit({ inputs: mk(3) }),
    batcher.submit({ inputs: { audio: item([4, 4]) } }),
  ]);
  t.same([...model.sizes].sort(), [1, 3], 'key order does not matter; other modality sets are another group');
  const call = model.calls.find((c) => !(c.inputs instanceof Tensor) && Object.keys(c.inputs).length === 2)!;
  const rec = call.inputs as Record<string, Tensor>;
  t.same(rec.audio!.shape, [3, 2]);
  t.same(rec.image!.shape, [3, 2, 2]);
  for (const i of [1, 2, 3]) {
    const logits = results[i - 1]!.logits as Record<string, Tensor>;
    t.same(Object.keys(logits).sort(), ['audio', 'image']);
    t.same(logits.audio!.shape, [1, 2]);
    t.same(logits.image!.shape, [1, 2, 2]);
    t.same(values(logits.audio), [2 * i, 2 * i], `item ${i}: audio`);
    t.same(values(logits.image), [2 * i, 2 * i + 2, 2 * i + 4, 2 * i + 6], `item ${i}: image`);
  }
  t.same(values((results[3]!.logits as Record<string, Tensor>).audio), [8, 8]);
  await batcher.close();
});

t.test('validation names the argument', async (t) => {
  const model = fakeModel();
  for (const [options, argument] of [
    [{ maxBatchSize: 0 }, 'options.maxBatchSize'],
    [{ maxBatchSize: 1.5 }, 'options.maxBatchSize'],
    [{ maxDelayMs: -1 }, 'options.maxDelayMs'],
    [{ maxQueue: Number.NaN }, 'options.maxQueue'],
    [{ maxQueue: '4' }, 'options.maxQueue'],
  ] as const) {
    t.throws(() => createBatcher(model, options as never), { name: 'InvalidArgumentError', argument }, `${JSON.stringify(options)} -> ${argument}`);
  }
  t.throws(() => createBatcher({} as never), { name: 'InvalidArgumentError', argument: 'model' });
  const batcher = createBatcher(model, { maxDelayMs: 1 });
  await t.rejects(batcher.submit({ inputs: Tensor.from('float32', [1, 2, 3, 4], [2, 2]) }), { name: 'InvalidArgumentError', argument: 'inputs' }, 'batch 2 refused');
  await t.rejects(batcher.submit({ inputs: Tensor.from('float32', [1], []) }), { name: 'InvalidArgumentError', argument: 'inputs' }, 'rank 0 refused');
  await t.rejects(batcher.submit({ inputs: { a: item([1]), b: Tensor.from('float32', [1, 2], [2, 1]) } }), { name: 'InvalidArgumentError', argument: 'inputs.b' });
  await t.rejects(batcher.submit({ inputs: {} }), { name: 'InvalidArgumentError', argument: 'inputs' });
  await t.rejects(batcher.submit({ inputs: [1, 2] as never }), { name: 'InvalidArgumentError', argument: 'inputs' });
  await t.rejects(batcher.submit({ inputs: item([1]), attentionMask: Tensor.from('int64', [1, 1], [2, 1]) }), { name: 'InvalidArgumentError', argument: 'attentionMask' });
  await t.rejects(batcher.submit({ inputs: item([1]), signal: {} as never }), { name: 'InvalidArgumentError', argument: 'signal' });
  await t.rejects(batcher.submit(null as never), { name: 'InvalidArgumentError', argument: 'request' });
  t.equal(model.calls.length, 0);
  t.equal(batcher.stats.requests, 0, 'invalid submits are not counted as requests');
  t.type(new InvalidArgumentError('x', 'y', 1), PerceiverError);
  await batcher.close();
});

t.test('backpressure: beyond maxQueue (queued + in flight) submit rejects at once with QueueFullError (429)', async (t) => {
  const gate = deferred();
  const model = fakeModel({ gate: gate.promise });
  const batcher = createBatcher(model, { maxBatchSize: 2, maxDelayMs: 1000, maxQueue: 3 });
  const a = batcher.submit({ inputs: item([1]) });
  const b = batcher.submit({ inputs: item([2]) }); // full batch: in flight, held by the gate
  const c = batcher.submit({ inputs: item([3]) }); // queued
  t.equal(batcher.stats.inFlight, 2);
  t.equal(batcher.stats.queued, 1);
  const refused = batcher.submit({ inputs: item([4]) });
  await t.rejects(refused, { name: 'QueueFullError', code: 'ERR_PERCEIVER_QUEUE_FULL', status: 429, limit: 3 });
  const error = await refused.catch((e: unknown) => e);
  t.type(error, QueueFullError);
  t.type(error, PerceiverError);
  t.equal(batcher.stats.rejected, 1);
  gate.resolve();
  t.same(values((await a).logits), [2]);
  t.same(values((await b).logits), [4]);
  t.equal(batcher.stats.inFlight, 0, 'capacity returned once the batch settled');
  const d = batcher.submit({ inputs: item([4]) }); // joins c: a full batch
  t.same(values((await c).logits), [6]);
  t.same(values((await d).logits), [8]);
  await batcher.close();
});

t.test('cancellation before dispatch removes the request', async (t) => {
  const model = fakeModel();
  const batcher = createBatcher(model, { maxBatchSize: 8, maxDelayMs: 30 });
  const controller = new AbortController();
  const kept = batcher.submit({ inputs: item([1]) });
  const dropped = batcher.submit({ inputs: item([2]), signal: controller.signal });
  t.equal(batcher.stats.queued, 2);
  controller.abort(new Error('client went away'));
  await t.rejects(dropped, { name: 'CancelledError', code: 'ERR_PERCEIVER_CANCELLED' });
  const error = await dropped.catch((e: unknown) => e);
  t.type(error, CancelledError);
  t.equal((error as Error).cause instanceof Error && ((error as Error).cause as Error).message, 'client went away', 'cause is the signal reason');
  t.equal(batcher.stats.queued, 1, 'left the queue at once');
  t.same(values((await kept).logits), [2]);
  t.same(model.sizes, [1], 'the cancelled item never reached the model');
  // A lone request cancelled: its group's timer is cleared and nothing runs.
  const c2 = new AbortController();
  const alone = batcher.submit({ inputs: item([5, 6]), signal: c2.signal });
  c2.abort();
  await t.rejects(alone, CancelledError);
  await sleep(50);
  t.same(model.sizes, [1]);
  // Already aborted at submit.
  await t.rejects(batcher.submit({ inputs: item([7]), signal: AbortSignal.abort() }), CancelledError);
  t.equal(batcher.stats.cancelled, 3);
  t.equal(batcher.stats.queued, 0);
  await batcher.close();
});

t.test('cancellation after dispatch rejects with CancelledError and discards the result', async (t) => {
  const gate = deferred();
  const model = fakeModel({ gate: gate.promise });
  const batcher = createBatcher(model, { maxBatchSize: 2, maxDelayMs: 1000 });
  const controller = new AbortController();
  const a = batcher.submit({ inputs: item([1]), signal: controller.signal });
  const b = batcher.submit({ inputs: item([2]) });
  t.same(model.sizes, [2], 'dispatched');
  controller.abort();
  await t.rejects(a, CancelledError, 'rejects without waiting for the forward');
  t.equal(batcher.stats.inFlight, 2, 'its slot stays in flight until the batch ends');
  gate.resolve();
  t.same(values((await b).logits), [4], 'the rest of the batch is unaffected');
  t.equal(batcher.stats.inFlight, 0);
  t.equal(batcher.stats.cancelled, 1);
  // Aborting after the result arrived changes nothing.
  const c3 = new AbortController();
  const done = batcher.submit({ inputs: item([3]), signal: c3.signal });
  const d = batcher.submit({ inputs: item([4]) });
  const r = await done;
  c3.abort();
  t.same(values(r.logits), [6]);
  await d;
  t.equal(batcher.stats.cancelled, 1);
  await batcher.close();
});

t.test('a forward error rejects every request of that batch, other batches unaffected', async (t) => {
  const boom = new Error('engine failed');
  let fail = true;
  const inner = fakeModel();
  const model = {
    forward: (call: Call) => {
      if (fail) return Promise.reject(boom);
      return inner.forward(call);
    },
  };
  const batcher = createBatcher(model, { maxBatchSize: 3, maxDelayMs: 5 });
  const failed = [1, 2, 3].map((i) => batcher.submit({ inputs: item([i]) }));
  fail = false;
  for (const p of failed) await t.rejects(p, boom, 'same error object');
  t.same(values((await batcher.submit({ inputs: item([5]) })).logits), [10]);
  // A synchronous throw is a rejection too.
  const throwing = createBatcher({ forward: () => { throw boom; } } as never, { maxDelayMs: 1 });
  await t.rejects(throwing.submit({ inputs: item([1]) }), boom);
  t.equal(throwing.stats.inFlight, 0);
  // An output without the right batch dimension is reported, not mis-split.
  const wrong = createBatcher({ forward: async () => ({ lastHiddenState: Tensor.zeros('float32', [1, 4]) }) }, { maxBatchSize: 2 });
  const bad = [wrong.submit({ inputs: item([1]) }), wrong.submit({ inputs: item([2]) })];
  for (const p of bad) await t.rejects(p, { name: 'InvalidArgumentError', argument: 'model.forward() lastHiddenState' });
  await Promise.all([batcher.close(), throwing.close(), wrong.close()]);
});

t.test('close() rejects new submits and drains queued and in-flight ones', async (t) => {
  const model = fakeModel({ delayMs: 20 });
  const batcher = createBatcher(model, { maxBatchSize: 2, maxDelayMs: 60_000 });
  const results: BatchResult[] = [];
  const pending = [1, 2, 3].map((i) => batcher.submit({ inputs: item([i]) }).then((r) => void results.push(r)));
  t.same(model.sizes, [2], 'one full batch in flight, one item queued');
  const closing = batcher.close();
  t.equal(batcher.close(), closing, 'close() is idempotent');
  await t.rejects(batcher.submit({ inputs: item([9]) }), DisposedError);
  await closing;
  t.equal(results.length, 3, 'every accepted request settled before close() resolved');
  t.same(model.sizes, [2, 1], 'the queued item was dispatched at once, not after maxDelayMs');
  await Promise.all(pending);
  const s = batcher.stats;
  t.same({ requests: s.requests, batches: s.batches, queued: s.queued, inFlight: s.inFlight, rejected: s.rejected }, { requests: 3, batches: 2, queued: 0, inFlight: 0, rejected: 1 });
  t.same(s.batchSizes, [0, 1, 1]);
  await createBatcher(model).close(); // closing an idle batcher resolves
});

t.test('stats is a snapshot', async (t) => {
  const batcher = createBatcher(fakeModel(), { maxBatchSize: 1 });
  const before = batcher.stats;
  before.batchSizes[1] = 99;
  await batcher.submit({ inputs: item([1]) });
  t.same(batcher.stats.batchSizes, [0, 1]);
  t.equal(before.requests, 0);
  t.equal(batcher.stats.requests, 1);
  await batcher.close();
});

t.test('real model: 12 concurrent submits give what each item gets alone, in fewer forwards', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('text-classification'));
  t.teardown(() => model.dispose());
  const seq = 10;
  const vocab = model.config.vocab_size;
  const requests = Array.from({ length: 12 }, (_, i) => {
    const ids = Array.from({ length: seq }, (_, j) => (7 * i + 13 * j + 3) % vocab);
    const maskValues = Array.from({ length: seq }, (_, j) => (j < seq - (i % 4) ? 1 : 0));
    return { inputs: Tensor.from('int64', ids, [1, seq]), attentionMask: Tensor.from('int64', maskValues, [1, seq]) };
  });
  const sizes: number[] = [];
  const spy = {
    forward: (call: Call) => {
      sizes.push((call.inputs as Tensor).shape[0]!);
      return model.forward(call);
    },
  };
  const batcher = createBatcher(spy, { maxBatchSize: 8, maxDelayMs: 20 });
  const batched = await Promise.all(requests.map((r) => batcher.submit(r)));
  await batcher.close();
  t.ok(sizes.length < 12, `${sizes.length} forwards for 12 requests (sizes ${sizes.join(', ')})`);
  t.equal(sizes.reduce((a, b) => a + b, 0), 12);
  for (let i = 0; i < requests.length; i++) {
    const alone = await model.forward(requests[i]!);
    const logits = batched[i]!.logits as Tensor;
    t.same(logits.shape, [1, model.config.num_labels], `item ${i}: logits shape`);
    const err = relativeError(logits, alone.logits as Tensor);
    t.ok(err < 1e-5, `item ${i}: logits relative error ${err.toExponential(2)} < 1e-5`);
    const errHidden = relativeError(batched[i]!.lastHiddenState, alone.lastHiddenState);
    t.ok(errHidden < 1e-5, `item ${i}: lastHiddenState relative error ${errHidden.toExponential(2)} < 1e-5`);
  }
});

t.test('maxBatchTokens: a group of items declaring tokens holds at most maxBatchTokens / tokens of them', async (t) => {
  const model = fakeModel();
  const batcher = createBatcher(model, { maxBatchSize: 16, maxDelayMs: 20, maxBatchTokens: 100 });
  // 7 items of 32 tokens: 3 per forward (96 tokens), so 3 + 3 + 1; answered in order.
  const results = await Promise.all(Array.from({ length: 7 }, (_, i) => batcher.submit({ inputs: item([i, i]), tokens: 32 })));
  t.same([...model.sizes].sort((a, b) => b - a), [3, 3, 1], 'forwards of 3, 3 and 1 items');
  t.same(results.map((r) => values(r.lastHiddenState)), Array.from({ length: 7 }, (_, i) => [i, i]), 'each caller gets its own item');
  // An item over the budget on its own still runs, alone.
  model.sizes.length = 0;
  await Promise.all([0, 1].map((i) => batcher.submit({ inputs: item([i, i]), tokens: 500 })));
  t.same(model.sizes, [1, 1], 'an item larger than the budget runs alone');
  // Items of another token count never share a forward (the count is part of the key).
  model.sizes.length = 0;
  await Promise.all([batcher.submit({ inputs: item([1, 1]), tokens: 10 }), batcher.submit({ inputs: item([2, 2]), tokens: 20 })]);
  t.same(model.sizes, [1, 1]);
  await t.rejects(batcher.submit({ inputs: item([1, 1]), tokens: -1 }), InvalidArgumentError, 'tokens must be a non-negative integer');
  t.throws(() => createBatcher(model, { maxBatchTokens: 0 }), InvalidArgumentError);
  await batcher.close();
});
