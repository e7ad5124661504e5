/**
 * The pipeline commands of the CLI (their options: lib/cli/commands/pipelines.ts):
 *
 *   perceiver-io fill-mask TEXT
 *   perceiver-io predict --model DIR|ID INPUT
 *   perceiver-io flow A B --out flow.png [--flo F]
 *   perceiver-io flow --video V --out flow.mp4|DIR
 *   perceiver-io autoencode VIDEO --out DIR
 *
 * Results go to stdout as JSON (one document), files to --out; messages to stderr.
 */
import type { ComputeDType } from '../modeling/perceiver_model.js';
import type { OptionValues } from './spec.js';
import { UsageError } from './usage.js';

type Values = OptionValues;

function integer(values: Values, name: string): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${name} wants a positive integer, got ${String(raw)}`);
  return n;
}

function print(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Runs one pipeline command after its options are parsed (lib/cli/commands/pipelines.ts); resolves the exit code. */
export async function runPipelineCommand(command: string, values: Values, positionals: string[]): Promise<number> {
  const { pipeline } = await import('../pipelines/index.js');
  const load = { device: values.device as string | undefined, dtype: values.dtype as ComputeDType | undefined, hub: {} };
  const progress = process.stderr.isTTY ? { progressCallback: (e: { file: string; received: number; total: number }) => process.stderr.write(`\r${e.file}: ${Math.floor((100 * e.received) / Math.max(1, e.total))}%`) } : {};
  // The default checkpoints are in the option tables; predict's --model is required there.
  const model = values.model as string;
  const out = values.out as string;

  if (command === 'fill-mask') {
    if (positionals.length !== 1) throw new UsageError('fill-mask takes one TEXT (quote it), with at least one [MASK]');
    await using pipe = await pipeline('fill-mask', model, { ...load, ...progress });
    const result = await pipe(positionals[0]!, { top_k: integer(values, 'top-k') });
    print({ masks: Array.isArray(result[0]) ? result : [result], spans: result.spans });
    return 0;
  }

  if (command === 'predict') {
    if (positionals.length !== 1) throw new UsageError('predict takes one INPUT (a text or an image file)');
    const { PerceiverConfig } = await import('../config.js');
    const { checkpointFolder } = await import('../modeling/perceiver_model.js');
    const folder = await checkpointFolder(model, progress.progressCallback ? { progress: progress.progressCallback } : {});
    const head = (await PerceiverConfig.fromPretrained(folder)).architectures?.[0];
    const topK = integer(values, 'top-k');
    if (head === 'PerceiverForSequenceClassification') {
      await using pipe = await pipeline('text-classification', folder, load);
      print(await pipe(positionals[0]!, { top_k: topK }));
    } else {
      await using pipe = await pipeline('image-classification', folder, load);
      print(await pipe(positionals[0]!, { top_k: topK }));
    }
    return 0;
  }

  if (command === 'flow') {
    const video = values.video as string | undefined;
    if (video === undefined ? positionals.length !== 2 : positionals.length !== 0) throw new UsageError('flow takes two images A B, or --video V (not both)');
    if (video !== undefined && values.flo !== undefined) throw new UsageError('--flo is for two images; a video gives one field per frame pair');
    const { writeFlowPicture, writeFlowVideo } = await import('../pipelines/write.js');
    if (video === undefined && !out.toLowerCase().endsWith('.png')) throw new UsageError('flow of two images writes a PNG: --out must end in .png');
    await using pipe = await pipeline('optical-flow', model, { ...load, ...progress });
    const runOptions = { batchSize: integer(values, 'batch-size'), maxFrames: integer(values, 'max-frames') };
    if (video !== undefined) {
      const result = await pipe({ video }, runOptions);
      if (!('fields' in result)) throw new Error('unreachable: a video gives fields');
      const files = await writeFlowVideo(out, result.fields, { fps: result.fps });
      print({ pairs: result.fields.length, fps: result.fps, width: result.fields[0]?.width, height: result.fields[0]?.height, files });
    } else {
      const field = await pipe([positionals[0]!, positionals[1]!], runOptions);
      if ('fields' in field) throw new Error('unreachable: two images give one field');
      await writeFlowPicture(out, field, values.flo as string | undefined);
      print({ width: field.width, height: field.height, files: [out, ...(values.flo ? [values.flo] : [])] });
    }
    return 0;
  }

  // autoencode
  if (positionals.length !== 1) throw new UsageError('autoencode takes one VIDEO');
  const { writeAutoencoding } = await import('../pipelines/write.js');
  await using pipe = await pipeline('video-autoencoding', model, { ...load, ...progress });
  const result = await pipe(positionals[0]!, { chunks: integer(values, 'chunks'), top_k: integer(values, 'top-k') });
  const files = await writeAutoencoding(out, result, { video: values['no-video'] !== true });
  print({ labels: result.labels, files });
  return 0;
}
