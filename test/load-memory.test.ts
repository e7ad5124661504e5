/**
 * Loading a checkpoint holds at most a bounded amount of memory beyond the engine's own copy of
 * the weights: the engine reads each safetensors tensor from the open file just before it packs
 * it, so the file's bytes are never all resident in JavaScript (or native) memory at once.
 *
 * A child process writes a random checkpoint of about 100 MB (RandomWeightStore, as bench/ and the
 * ORT peer do); another loads it with AutoModel.fromPretrained and reports its peak resident set
 * (VmHWM, the kernel's high-water mark) before and after the load. Reading
 * the whole file into memory and then packing it (the previous loader) peaks at about twice the
 * file; the bound here is the file plus a fixed allowance. Children load the compiled package
 * (npm test builds it first), each in a fresh process so no earlier allocation hides the peak.
 */
import t from 'tap';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { runNodeScript } from './helpers/child.js';
import { REPO } from './helpers/fixtures.js';

/** Runs an ES module script in a child `node`; its stdout, or an error carrying its stderr. */
async function runChild(script: string, args: string[]): Promise<string> {
  const { code, signal, stdout, stderr } = await runNodeScript(script, args, CHILD_TIMEOUT_MS);
  if (code !== 0) throw new Error(`child exited with ${code ?? signal}: ${stderr}`);
  return stdout;
}

const DIST_ENTRY = pathToFileURL(join(REPO, 'dist', 'lib', 'index.js')).href;
const CHILD_TIMEOUT_MS = 60_000;
const MIB = 2 ** 20;
/**
 * What loading may hold beyond the packed weights: the largest tensor's read buffer (6.25 MiB
 * here), the packing's panel padding and the allocator's slack. Far below the file itself (the
 * old loader's excess).
 */
const ALLOWANCE_BYTES = 48 * MIB;

/** PerceiverForMaskedLM with the language checkpoint's widths and 2 self-attends: about 28 M parameters (106 MiB). */
const CONFIG = {
  architectures: ['PerceiverForMaskedLM'],
  qk_channels: 256,
  v_channels: 1280,
  num_self_attends_per_block: 2,
};


/** Writes config.json and model.safetensors of CONFIG with RandomWeightStore(1) into argv[1]. */
const WRITE = `
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
const pio = await import(${JSON.stringify(DIST_ENTRY)});
const dir = process.argv[1];
const config = new pio.PerceiverConfig(${JSON.stringify(CONFIG)});
const model = new pio.PerceiverForMaskedLM(config);
const store = new pio.RandomWeightStore(1);
model.buildSpec(store); // claims every weight at its shape, building no engine
await pio.writeSafetensors(join(dir, 'model.safetensors'), store.tensors);
writeFileSync(join(dir, 'config.json'), JSON.stringify(config.toJSON()));
`;

/** Loads argv[1] and prints the peak resident set (bytes) before and after, and after a forward. */
const LOAD = `
const pio = await import(${JSON.stringify(DIST_ENTRY)});
import { readFileSync } from 'node:fs';
pio.capabilities(); // the addon loaded before the baseline
// VmHWM where there is /proc (Linux carries getrusage's maxRSS across fork + exec, so the parent's
// peak would hide the child's); the kernel's maxRSS elsewhere.
const peak = () => {
  try {
    return Number(/VmHWM:\\s+(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
  } catch {
    return process.resourceUsage().maxRSS * 1024;
  }
};
const before = peak();
const model = await pio.AutoModel.fromPretrained(process.argv[1]);
const afterLoad = peak();
const ids = new BigInt64Array(2048).fill(1n);
const out = await model.forward({ inputs: new pio.Tensor('int64', [1, 2048], ids) });
if (!out.logits.data.every(Number.isFinite)) throw new Error('non-finite logits');
const afterForward = peak();
model.dispose();
console.log(JSON.stringify({ before, afterLoad, afterForward }));
`;

t.test('loading a safetensors checkpoint peaks at the packed weights plus a bounded allowance', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'perceiver-load-memory-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await runChild(WRITE, [dir]);
  const fileBytes = (await stat(join(dir, 'model.safetensors'))).size;
  t.ok(fileBytes > 64 * MIB, `the checkpoint is large enough to measure (${(fileBytes / MIB).toFixed(0)} MiB)`);

  const { before, afterLoad, afterForward } = JSON.parse(await runChild(LOAD, [dir])) as Record<string, number>;
  const grown = afterLoad - before!;
  t.ok(
    grown <= fileBytes + ALLOWANCE_BYTES,
    `peak grew by ${(grown / MIB).toFixed(0)} MiB while loading a ${(fileBytes / MIB).toFixed(0)} MiB checkpoint (at most the file + ${ALLOWANCE_BYTES / MIB} MiB)`,
  );
  // The engine's copy is resident: the measurement saw the load at all.
  t.ok(grown >= fileBytes * 0.9, `the packed weights are resident (${(grown / MIB).toFixed(0)} MiB)`);
  t.ok(afterForward! >= afterLoad!, 'a forward runs on the loaded model');
});
