/**
 * Environments going away with native calls in flight: a worker thread that ends (terminate() from
 * the main thread, process.exit() inside it, also from a settling call's callback, or an uncaught
 * exception) while its loads, forwards, encodes, decodes, uploads or toHost copies run ends alone,
 * and the main thread carries on; the main thread's own process.exit() with calls in flight (its
 * own and its workers') exits cleanly.
 *
 * Each scenario runs in a child process, so an abort shows as the child's signal or exit code
 * instead of killing tap; children and their workers load the compiled package (npm test builds
 * it first).
 */
import t from 'tap';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { runNodeScript } from './helpers/child.js';
import { fixtureDir, LOAD_OPTIONS, REPO } from './helpers/fixtures.js';

const DIST_ENTRY = pathToFileURL(join(REPO, 'dist', 'lib', 'index.js')).href;
const MLM = fixtureDir('text-mlm');
const IMAGE = fixtureDir('image-learned');
/** The device the models load on: the CPU, or what bench/gpu-check.sh sets (PERCEIVER_TEST_DEVICE). */
const LOAD = JSON.stringify(LOAD_OPTIONS);
/** Calls each worker starts at once; enough queued work (tens of ms) that some are still running when it ends. */
const CALLS = 8;
const CHILD_TIMEOUT_MS = 30_000;


/**
 * The worker: makes what its call kind needs, starts CALLS calls of that kind without awaiting
 * them (counting settlements in shared memory), optionally disposes everything while they run,
 * then ends as told. CommonJS for `eval: true`; the library comes in by dynamic import.
 */
const WORKER_CODE = `
const { parentPort, workerData } = require('node:worker_threads');
const { entry, mlm, image, load, kind, ending, disposeRace, calls } = workerData;
const settled = new Int32Array(workerData.counters);
import(entry).then(async (lib) => {
  const ids = new lib.Tensor('int64', [64, 48], new BigInt64Array(64 * 48).fill(9n));
  const pixels = new lib.Tensor('float32', [8, 3, 8, 8], new Float32Array(8 * 192).fill(0.25));
  const big = new lib.Tensor('float32', [1 << 21], new Float32Array(1 << 21).fill(0.5));
  const owned = [];
  let start;
  if (kind === 'load') {
    start = () => lib.AutoModel.fromPretrained(mlm, load);
  } else if (kind === 'forward' || kind === 'encode' || kind === 'decode') {
    const model = await lib.AutoModel.fromPretrained(mlm, load);
    owned.push(model);
    if (kind === 'forward') start = () => model.forward({ inputs: ids });
    if (kind === 'encode') start = () => model.encode({ inputs: ids });
    if (kind === 'decode') {
      const encoding = await model.encode({ inputs: ids });
      owned.push(encoding);
      start = () => model.decode(encoding);
    }
  } else {
    const model = await lib.AutoModel.fromPretrained(image, load);
    owned.push(model);
    if (kind === 'upload') start = () => model.upload(big);
    if (kind === 'toHost') {
      const tensor = await model.upload(big);
      owned.push(tensor);
      start = () => tensor.toHost();
    }
    if (kind === 'forward-device') {
      // Device inputs read in place, device outputs made into handles as the call settles.
      const input = await model.upload(pixels);
      owned.push(input);
      start = () => model.forward({ inputs: input, outputs: 'device' });
    }
  }
  const running = [];
  for (let i = 0; i < calls; i++) {
    running.push(start().then(() => Atomics.add(settled, 0, 1), () => Atomics.add(settled, 1, 1)));
  }
  if (disposeRace) for (const thing of owned) thing.dispose();
  if (ending === 'exit') process.exit(7);
  // From a settlement's own callback, with the other calls still running.
  if (ending === 'exit-on-settle') running[0].then(() => process.exit(7));
  if (ending === 'throw') {
    // Uncaught (outside this promise chain), before any call can settle.
    queueMicrotask(() => { throw new Error('thrown on purpose with calls in flight'); });
    return;
  }
  // Alive until terminated (not ending by itself should every call settle first).
  setInterval(() => {}, 60_000);
  parentPort.postMessage('started');
}).catch((error) => parentPort.postMessage('failed: ' + (error && error.stack || error)));
`;

/**
 * The child for one call kind: for each ending, a few workers in a row, each ended mid-call; one
 * line per worker with how many of its calls had not settled when it ended; then the main
 * thread's own forward, and the device tensors still alive (every worker's are freed with it).
 */
function workerScenarioScript(kind: string): string {
  return `
import { Worker } from 'node:worker_threads';
import { AutoModel, Tensor } from ${JSON.stringify(DIST_ENTRY)};
import { loadAddon } from ${JSON.stringify(pathToFileURL(join(REPO, 'dist', 'lib', 'native', 'binding.js')).href)};
const plan = [['terminate', false], ['terminate', true], ['terminate', false], ['exit', false], ['exit', true], ['exit', false], ['throw', false], ['exit-on-settle', false]];
for (const [ending, disposeRace] of plan) {
  const counters = new SharedArrayBuffer(8);
  const worker = new Worker(${JSON.stringify(WORKER_CODE)}, {
    eval: true,
    execArgv: [], // not the parent's --input-type=module: the worker code is CommonJS
    workerData: { entry: ${JSON.stringify(DIST_ENTRY)}, mlm: ${JSON.stringify(MLM)}, image: ${JSON.stringify(IMAGE)}, load: ${LOAD},
                  kind: ${JSON.stringify(kind)}, ending, disposeRace, calls: ${CALLS}, counters },
  });
  let uncaught = null;
  const exitCode = await new Promise((resolve, reject) => {
    worker.on('message', (message) => {
      if (message !== 'started') reject(new Error(String(message)));
      else if (ending === 'terminate') worker.terminate();
    });
    worker.on('error', (error) => { if (ending === 'throw') uncaught = error.message; else reject(error); });
    worker.on('exit', resolve);
  });
  const [resolved, rejected] = new Int32Array(counters);
  console.log(JSON.stringify({ ending, disposeRace, exitCode, uncaught, unsettled: ${CALLS} - resolved - rejected }));
}
const model = await AutoModel.fromPretrained(${JSON.stringify(MLM)}, ${LOAD});
const out = await model.forward({ inputs: new Tensor('int64', [2, 48], new BigInt64Array(96).fill(9n)) });
await model.dispose();
console.log('MAIN-OK ' + JSON.stringify(out.logits.shape) + ' ' + JSON.stringify(loadAddon().deviceTensorStats()));
`;
}

interface WorkerLine {
  ending: 'terminate' | 'exit' | 'throw' | 'exit-on-settle';
  disposeRace: boolean;
  exitCode: number;
  /** The worker's uncaught exception, for the 'throw' ending. */
  uncaught: string | null;
  unsettled: number;
}

const KINDS = ['load', 'forward', 'encode', 'decode', 'upload', 'toHost', 'forward-device'];

for (const kind of KINDS) {
  t.test(`${kind}: a worker ending with calls in flight ends alone, the main thread carries on`, async (t) => {
    const result = await runNodeScript(workerScenarioScript(kind), [], CHILD_TIMEOUT_MS);
    t.equal(result.signal, null, `the process was not killed (stderr: ${result.stderr.trim().slice(-400)})`);
    t.equal(result.code, 0, `the process exited 0 (stderr: ${result.stderr.trim().slice(-400)})`);
    t.notMatch(result.stderr, /terminate called|Napi::Error|FATAL ERROR/, 'no native abort or fatal error reported');
    const lines = result.stdout
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as WorkerLine);
    t.equal(lines.length, 8, 'every worker of the plan ran and ended');
    for (const line of lines) {
      const expectedCode = { terminate: 1, exit: 7, throw: 1, 'exit-on-settle': 7 }[line.ending];
      t.equal(line.exitCode, expectedCode, `${line.ending}${line.disposeRace ? ' (disposed mid-call)' : ''}: the worker ended through ${line.ending} (exit code ${expectedCode})`);
      if (line.ending === 'throw') t.equal(line.uncaught, 'thrown on purpose with calls in flight', 'throw: the worker ended on its uncaught exception');
      // process.exit() and the throw come in the same turn as the calls, so none can have settled.
      if (line.ending === 'exit' || line.ending === 'throw') t.equal(line.unsettled, CALLS, `${line.ending}: all ${CALLS} calls were in flight when the worker ended`);
    }
    t.comment(`calls unsettled when each worker ended: ${lines.map((line) => `${line.ending} ${line.unsettled}`).join(', ')}`);
    const terminated = lines.filter((line) => line.ending === 'terminate');
    const unsettledAtTerminate = terminated.reduce((sum, line) => sum + line.unsettled, 0);
    t.ok(unsettledAtTerminate > 0, `terminate() landed mid-call (${unsettledAtTerminate} of ${terminated.length * CALLS} calls unsettled)`);
    const done = /MAIN-OK (\S+) (\S+)/.exec(result.stdout);
    t.ok(done, 'the main thread ran its own forward after the workers ended');
    if (done) {
      t.same(JSON.parse(done[1]!), [2, 48, 262], "the main thread's forward has the logits' shape");
      t.same(JSON.parse(done[2]!), { live: 0, bytes: 0 }, "the ended workers' device tensors were all freed");
    }
  });
}

t.test('process.exit() on the main thread with calls of every kind in flight, its own and a worker\'s, exits cleanly', async (t) => {
  const script = `
import { Worker } from 'node:worker_threads';
import { AutoModel, Tensor } from ${JSON.stringify(DIST_ENTRY)};
const ids = new Tensor('int64', [64, 48], new BigInt64Array(64 * 48).fill(9n));
const big = new Tensor('float32', [1 << 21], new Float32Array(1 << 21).fill(0.5));
const text = await AutoModel.fromPretrained(${JSON.stringify(MLM)}, ${LOAD});
const image = await AutoModel.fromPretrained(${JSON.stringify(IMAGE)}, ${LOAD});
const encoding = await text.encode({ inputs: ids });
const tensor = await image.upload(big);
const worker = new Worker(${JSON.stringify(WORKER_CODE)}, {
  eval: true,
  execArgv: [],
  workerData: { entry: ${JSON.stringify(DIST_ENTRY)}, mlm: ${JSON.stringify(MLM)}, image: ${JSON.stringify(IMAGE)}, load: ${LOAD},
                kind: 'forward', ending: 'keep', disposeRace: false, calls: ${CALLS}, counters: new SharedArrayBuffer(8) },
});
console.log('worker: ' + await new Promise((resolve) => worker.once('message', resolve)));
const pending = [];
for (let i = 0; i < 4; i++) {
  pending.push(AutoModel.fromPretrained(${JSON.stringify(MLM)}, ${LOAD}), text.forward({ inputs: ids }), text.encode({ inputs: ids }),
               text.decode(encoding), image.upload(big), tensor.toHost());
}
console.log('EXITING with ' + pending.length + ' calls in flight');
process.exit(0);
`;
  for (let round = 0; round < 3; round++) {
    const result = await runNodeScript(script, [], CHILD_TIMEOUT_MS);
    t.equal(result.signal, null, `round ${round}: not killed (stderr: ${result.stderr.trim().slice(-400)})`);
    t.equal(result.code, 0, `round ${round}: exit code 0 (stderr: ${result.stderr.trim().slice(-400)})`);
    t.match(result.stdout, /worker: started/, `round ${round}: the worker's calls were running`);
    t.match(result.stdout, /EXITING/, `round ${round}: the script reached process.exit()`);
  }
});
