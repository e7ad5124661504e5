/**
 * A seeded fuzz of the HTTP surface (bench/http_fuzz_cases.ts): methods, paths, content types,
 * random, malformed, huge and binary JSON bodies, wrong field types, images. No case may get a 5xx,
 * hang or take the server down. 300 cases here; bench/http_fuzz.ts runs 10,000.
 */
import t from 'tap';
import sharp from 'sharp';
import { AutoModel, PerceiverImageProcessor } from '../lib/index.js';
import { serve } from '../lib/serving/server.js';
import { runFuzz } from '../bench/http_fuzz_cases.js';
import { fixtureDir } from './helpers/fixtures.js';

const CASES_PER_MODEL = 150;
const MAX_BODY_BYTES = 1024 * 1024;

for (const [name, seed] of [
  ['text-classification', 1],
  ['image-fourier', 2],
] as const) {
  t.test(`${name}: ${CASES_PER_MODEL} random requests, no 5xx, no hang`, async (t) => {
    const model = await AutoModel.fromPretrained(fixtureDir(name));
    t.teardown(() => model.dispose());
    const imageProcessor = name === 'image-fourier' ? new PerceiverImageProcessor({ size: { height: 8, width: 10 }, doCenterCrop: false }) : undefined;
    const server = await serve(model, { maxBodyBytes: MAX_BODY_BYTES, maxDelayMs: 1, ...(imageProcessor ? { imageProcessor } : {}) });
    t.teardown(() => server.close());
    const validImage = await sharp(Buffer.alloc(12 * 9 * 3, 99), { raw: { width: 12, height: 9, channels: 3 } }).png().toBuffer();

    const report = await runFuzz(server.url, { seed, count: CASES_PER_MODEL, concurrency: 4, timeoutMs: 20_000, validImage, maxBodyBytes: MAX_BODY_BYTES });
    t.equal(report.cases, CASES_PER_MODEL, `${report.cases} cases: ${JSON.stringify(report.statuses)}`);
    t.same(report.failures, [], `no 5xx, no hang, no unexplained network error (seed ${seed})`);
    t.ok((report.statuses['200'] ?? 0) > 0, 'some cases succeed (the valid ones)');
    t.ok(Object.keys(report.statuses).some((s) => /^4\d\d$/.test(s)), 'and the bad ones get 4xx');
    t.ok(Object.keys(report.kinds).length >= 8, `every kind of case ran: ${JSON.stringify(report.kinds)}`);
    const health = await fetch(`${server.url}/health`);
    t.equal(health.status, 200, 'the server still answers /health');
  });
}
