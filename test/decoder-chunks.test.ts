/**
 * The decoder's long per-item query blocks (optical flow queries with every pixel) run in chunks of
 * query rows (native/src/model/decoders.cc, PERCEIVER_DECODER_CHUNK_ROWS, default 16,384 rows) so
 * the layer's intermediates are bounded by the chunk, not the image. Each query row attends to the
 * latents alone and every later op is row-wise, so chunked decoding must give the same bits as one
 * pass: checked here on the CPU with chunks far smaller than the fixture's query block, including a
 * partial last chunk and a chunk of one row.
 */
import t from 'tap';
import { PerceiverForOpticalFlow, type Tensor } from '../lib/index.js';
import { fixtureDir, fixtureIo } from './helpers/fixtures.js';

async function withChunkRows<T>(rows: number | undefined, run: () => Promise<T>): Promise<T> {
  const before = process.env.PERCEIVER_DECODER_CHUNK_ROWS;
  if (rows === undefined) delete process.env.PERCEIVER_DECODER_CHUNK_ROWS;
  else process.env.PERCEIVER_DECODER_CHUNK_ROWS = String(rows);
  try {
    return await run();
  } finally {
    if (before === undefined) delete process.env.PERCEIVER_DECODER_CHUNK_ROWS;
    else process.env.PERCEIVER_DECODER_CHUNK_ROWS = before;
  }
}

t.test('optical flow decoded in chunks of query pixels equals one pass, bit for bit', async (t) => {
  const io = await fixtureIo('optical-flow');
  const model = await PerceiverForOpticalFlow.fromPretrained(fixtureDir('optical-flow'));
  t.teardown(() => model.dispose());
  const inputs = io.get('input')!;
  const [height, width] = model.config.train_size as number[];
  const pixels = height! * width!;
  const whole = (await withChunkRows(1 << 30, () => model.forward({ inputs }))).logits as Tensor;
  t.ok(pixels > 2 * 37, `the fixture decodes ${pixels} query pixels, many chunks of 37`);
  for (const rows of [37, pixels - 1, 1]) {
    const chunked = (await withChunkRows(rows, () => model.forward({ inputs }))).logits as Tensor;
    t.same(chunked.shape, whole.shape, `chunks of ${rows}: same shape`);
    const a = whole.data as Float32Array;
    const b = chunked.data as Float32Array;
    let differing = 0;
    for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) differing++;
    t.equal(differing, 0, `chunks of ${rows} rows (last chunk ${pixels % rows || rows}): all ${a.length} values identical`);
  }
  // The default (16,384 rows) decodes the fixture whole; the expected values still hold.
  const byDefault = (await withChunkRows(undefined, () => model.forward({ inputs }))).logits as Tensor;
  t.same([...(byDefault.data as Float32Array)], [...(whole.data as Float32Array)], 'default chunking = one pass');
});
