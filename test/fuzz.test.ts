/**
 * A short pass of the fuzz harness (bench/fuzz.ts; the long runs are `node dist/bench/fuzz.js`):
 * mutated safetensors headers, pytorch_model.bin archives and config.json files end in a parse or
 * a typed error, never anything else, and never hang.
 */
import t from 'tap';
import { fuzz, HANG_MS, type Format } from '../bench/fuzz.js';

for (const format of ['safetensors', 'bin', 'config'] as Format[]) {
  t.test(`${format}: 400 mutated inputs`, async (t) => {
    const r = fuzz(format, 400, 20261127);
    t.equal(r.runs, 400);
    t.ok(r.rejected > 0, `mutations reach the validation (${r.rejected} rejected, ${r.accepted} parsed)`);
    t.same(r.findings, [], 'no crash, no untyped error, no hang');
    t.ok(r.slowestMs < HANG_MS, `slowest input ${r.slowestMs.toFixed(1)} ms`);
  });
}
