/**
 * The runtime around the ops (backend-neutral, so it is tested here on the CPU backend; the GPU
 * check runs the same counters on CUDA): the arena planner's offsets and predicted peak, a
 * steady-state forward that allocates nothing and waits once (the counting decorator,
 * PERCEIVER_COUNT_RUNTIME=1), outputs unchanged by the arena's memory reuse (across shapes and
 * concurrent calls), and a device fault that marks its model unusable.
 */
import t from 'tap';
import { AutoModel, BackendUnavailableError, DeviceTensor, InvalidArgumentError, Tensor } from '../lib/index.js';
import { loadAddon } from '../lib/native/binding.js';
import { fixtureDir, fixtureInputs, fixtureIo, fixturePoints } from './helpers/fixtures.js';

// Read when a model loads: every model of this file is counted.
process.env.PERCEIVER_COUNT_RUNTIME = '1';
const addon = loadAddon();

const aligned = (bytes: number, alignment: number) => Math.ceil(Math.max(bytes, 1) / alignment) * alignment;

/** A small deterministic generator (mulberry32), so every run plans the same cases. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

t.test('planArena: tensors live at the same time never share bytes; the peak is the block', async (t) => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const next = random(seed);
    const n = 20 + Math.floor(next() * 200);
    const bytes: number[] = [], first: number[] = [], last: number[] = [];
    for (let i = 0; i < n; i++) {
      bytes.push(1 + Math.floor(next() * 1_000_000));
      const a = Math.floor(next() * 400);
      first.push(a);
      last.push(a + Math.floor(next() * 60));
    }
    const alignment = 256;
    const plan = addon.planArena({ bytes, first, last, alignment });
    let overlaps = 0, misaligned = 0, end = 0;
    for (let i = 0; i < n; i++) {
      if (plan.offsets[i]! % alignment !== 0) misaligned++;
      end = Math.max(end, plan.offsets[i]! + aligned(bytes[i]!, alignment));
      for (let j = i + 1; j < n; j++) {
        const live = first[i]! <= last[j]! && first[j]! <= last[i]!;
        const disjoint = plan.offsets[i]! + aligned(bytes[i]!, alignment) <= plan.offsets[j]! || plan.offsets[j]! + aligned(bytes[j]!, alignment) <= plan.offsets[i]!;
        if (live && !disjoint) overlaps++;
      }
    }
    // The live bound, computed here independently: the most aligned bytes live at any one event.
    let bound = 0;
    for (let e = 0; e <= 460; e++) {
      let live = 0;
      for (let i = 0; i < n; i++) if (first[i]! <= e && e <= last[i]!) live += aligned(bytes[i]!, alignment);
      bound = Math.max(bound, live);
    }
    t.equal(overlaps, 0, `seed ${seed}, ${n} tensors: no two live tensors overlap`);
    t.equal(misaligned, 0, `seed ${seed}: every offset aligned`);
    t.equal(plan.peakBytes, end, `seed ${seed}: the predicted peak is the end of the furthest tensor`);
    t.equal(plan.liveBoundBytes, bound, `seed ${seed}: the live bound is the most bytes live at one event`);
    const total = bytes.reduce((s, b) => s + aligned(b, alignment), 0);
    t.ok(plan.peakBytes >= bound && plan.peakBytes < total, `seed ${seed}: bound ${bound} <= peak ${plan.peakBytes} < no reuse ${total}`);
  }
  // A chain where each tensor dies right after the next is made: two blocks' worth, reused.
  const size = 1000, n = 10;
  const chain = addon.planArena({
    bytes: Array(n).fill(size),
    first: Array.from({ length: n }, (_, i) => 2 * i),
    last: Array.from({ length: n }, (_, i) => 2 * i + 2),
  });
  t.equal(chain.peakBytes, 2 * aligned(size, 256), 'a chain needs two tensors of room, not ten');
  t.same(addon.planArena({ bytes: [], first: [], last: [] }), { offsets: [], peakBytes: 0, liveBoundBytes: 0 }, 'nothing to place');
  const invalid = { code: 'ERR_PERCEIVER_INVALID_ARGUMENT' };
  t.throws(() => addon.planArena({ bytes: [4], first: [3], last: [2] }), { ...invalid, message: /for planArena\.last\[0\]/ }, 'released before allocated');
  t.throws(() => addon.planArena({ bytes: [4], first: [0], last: [1], alignment: 3 }), { ...invalid, message: /power of two/ }, 'alignment not a power of two');
  t.throws(() => addon.planArena({ bytes: [-1], first: [0], last: [1] }), { ...invalid, message: /non-negative integer/ }, 'negative size');
  t.throws(() => addon.planArena({ bytes: [1, 2], first: [0], last: [1] }), { ...invalid, message: /one per size/ }, 'lengths differ');
  t.throws(() => addon.planArena({ bytes: 'x' as unknown as number[], first: [], last: [] }), invalid, 'not an array');
});

function sameBits(a: Tensor, b: Tensor): boolean {
  return Buffer.from(a.bytes()).equals(Buffer.from(b.bytes()));
}

t.test('a steady-state forward allocates nothing, waits once and gives the same bits', async (t) => {
  const io = await fixtureIo('text-mlm');
  const model = await AutoModel.fromPretrained(fixtureDir('text-mlm'));
  t.teardown(() => model.dispose());
  const call = { inputs: fixtureInputs(io), attentionMask: io.get('call.attention_mask'), subsampledOutputPoints: fixturePoints(io) };
  const before = addon.runtimeCounters();
  const first = await model.forward(call);
  await model.forward(call);
  await model.forward(call);
  const warm = addon.runtimeCounters();
  t.ok(warm.allocations > before.allocations, `warm-up allocates (${warm.allocations - before.allocations} allocations in 3 calls)`);
  const calls = 4;
  for (let i = 0; i < calls; i++) {
    const out = await model.forward(call);
    t.ok(sameBits(out.logits as Tensor, first.logits as Tensor), `call ${i + 4}: the logits of the first call, bit for bit`);
    t.ok(sameBits(out.lastHiddenState, first.lastHiddenState), `call ${i + 4}: the same lastHiddenState`);
  }
  const after = addon.runtimeCounters();
  t.equal(after.allocations - warm.allocations, 0, 'no allocation after warm-up');
  t.equal(after.syncs - warm.syncs, calls, 'one wait per forward (its outputs are queued, then waited for once)');
  t.same(after.internal, warm.internal, 'nothing inside the backend either (no pageable copy, wait or allocation)');
  t.equal(after.arena.replayedCalls - warm.arena.replayedCalls, calls, 'every call replayed the arena plan');
  t.equal(after.arena.blocks, warm.arena.blocks, 'on the same block');
  t.ok(after.runs - warm.runs >= calls * 10, `the ops ran (${(after.runs - warm.runs) / calls} per call)`);
  // A call cut short midway (a mask row that masks every key is found after the preprocessor ran)
  // leaves the plan as it was: the next calls still allocate nothing and give the same bits.
  const mask = call.attentionMask!;
  const bad = await model.forward({ ...call, attentionMask: new Tensor(mask.dtype, mask.shape, new (mask.data.constructor as new (n: number) => typeof mask.data)(mask.size)) }).catch((e: unknown) => e);
  t.type(bad, InvalidArgumentError, 'a mask that masks every key fails the call');
  const afterBad = addon.runtimeCounters();
  t.ok(sameBits((await model.forward(call)).logits as Tensor, first.logits as Tensor), 'the next call: the same bits');
  const afterNext = addon.runtimeCounters();
  t.equal(afterNext.allocations - afterBad.allocations, 0, 'and no allocation: the failed call did not replace the plan');
  t.equal(afterNext.arena.recordedCalls, warm.arena.recordedCalls, 'no re-plan');
  // The plan's predicted peak: at least the live bound, and the block the arena allocated for it.
  const { lastPeakBytes, lastLiveBoundBytes } = after.arena;
  t.ok(lastPeakBytes >= lastLiveBoundBytes && lastLiveBoundBytes > 0, `peak ${lastPeakBytes} B >= live bound ${lastLiveBoundBytes} B`);
  t.ok(lastPeakBytes <= 1.25 * lastLiveBoundBytes, `the greedy plan is within 25% of the bound (${(lastPeakBytes / lastLiveBoundBytes).toFixed(3)}x)`);
});

t.test('the arena across shapes and concurrent calls: each shape its own plan, the same bits', async (t) => {
  const io = await fixtureIo('image-learned');
  const model = await AutoModel.fromPretrained(fixtureDir('image-learned'));
  t.teardown(() => model.dispose());
  const two = io.get('input')!;
  const [batch, c, h, w] = two.shape as number[];
  t.equal(batch, 2, 'the fixture holds two images');
  const one = new Tensor('float32', [1, c!, h!, w!], two.toFloat32().slice(0, c! * h! * w!));
  const expectedOne = (await model.forward({ inputs: one })).logits as Tensor;
  const expectedTwo = (await model.forward({ inputs: two })).logits as Tensor;
  for (let round = 0; round < 3; round++) {
    const results = await Promise.all([model.forward({ inputs: one }), model.forward({ inputs: two }), model.forward({ inputs: one }), model.forward({ inputs: two })]);
    results.forEach((r, i) => t.ok(sameBits(r.logits as Tensor, i % 2 ? expectedTwo : expectedOne), `round ${round}, call ${i} (batch ${i % 2 ? 2 : 1}): the same bits`));
  }
  // Outputs left in backend memory outlive the call: the arena must not hand their bytes out again.
  const resident = await model.forward({ inputs: two, outputs: 'device' });
  await model.forward({ inputs: two });
  await model.forward({ inputs: one });
  const logits = resident.logits as DeviceTensor;
  t.type(logits, DeviceTensor);
  t.ok(sameBits(await logits.toHost(), expectedTwo), 'a resident output keeps its values while later calls reuse the arena');
  logits.dispose();
  resident.lastHiddenState.dispose();
});

t.test('a device fault marks the model unusable, with an error that says so', async (t) => {
  const io = await fixtureIo('image-learned');
  const model = await AutoModel.fromPretrained(fixtureDir('image-learned'));
  t.teardown(() => model.dispose());
  const call = { inputs: io.get('input')! };
  const good = await model.forward(call);
  addon.injectDeviceFault();
  const first = await model.forward(call).then(() => undefined, (e: unknown) => e as Error & { code?: string });
  t.ok(first, 'the call that hits the fault fails');
  t.match(first?.message, /injected device fault/, 'the first error names the fault');
  t.match(first?.message, /unusable from now on/, 'and says the model is now unusable');
  const later = await model.forward(call).then(() => undefined, (e: unknown) => e);
  t.type(later, BackendUnavailableError, 'a later call: BackendUnavailableError');
  t.match((later as Error).message, /earlier call failed with a device fault \(injected device fault/, 'naming the first fault');
  await t.rejects(model.upload(call.inputs), BackendUnavailableError, 'uploads too');
  // Another model is not affected (the fault is this model's).
  const other = await AutoModel.fromPretrained(fixtureDir('image-learned'));
  t.teardown(() => other.dispose());
  t.ok(sameBits((await other.forward(call)).logits as Tensor, good.logits as Tensor), 'a model loaded afterwards works');
});
