/**
 * The pipeline commands of the CLI, each with its own --help:
 *
 *   perceiver-io fill-mask TEXT
 *   perceiver-io predict --model DIR|ID INPUT
 *   perceiver-io flow A B --out flow.png [--flo F]
 *   perceiver-io flow --video V --out flow.mp4|DIR
 *   perceiver-io autoencode VIDEO --out DIR
 *
 * Results go to stdout as JSON (one document), files to --out; messages to stderr.
 */
import { parseArgs } from 'node:util';
import type { ComputeDType } from '../modeling/perceiver_model.js';
import { UsageError } from './usage.js';

const COMMON = `  --model DIR|ID          checkpoint folder or Hugging Face Hub id
  --device cpu            where to run (cpu, cuda, cuda:N)
  --dtype float32         compute precision (float32; tfloat32, float16, bfloat16 on CUDA)
  -h, --help              this help`;

const HELP: Record<string, string> = {
  'fill-mask': `Usage: perceiver-io fill-mask [options] TEXT

Fills every [MASK] in TEXT (one byte each) with a masked language model. Prints JSON:
{"masks": [[{score, token, token_str, sequence}, ...] per mask], "spans": [{text, score, sequence}]}
(runs of consecutive masks decoded together).

Options:
  --top-k 5               candidates per mask
${COMMON.replace('checkpoint folder or Hugging Face Hub id', 'default deepmind/language-perceiver')}`,
  predict: `Usage: perceiver-io predict --model DIR|ID [options] INPUT

Classifies one input: a text for a text-classification checkpoint, an image file for an image
classifier. Prints JSON [{label, score}, ...].

Options:
  --top-k 5               labels to print
${COMMON}`,
  flow: `Usage: perceiver-io flow A B --out flow.png [--flo flow.flo] [options]
       perceiver-io flow --video V --out flow.mp4|DIR [options]

Optical flow from image A to image B, written as a PNG in the Middlebury colour coding (hue =
direction, saturation = magnitude over the largest) and optionally as a Middlebury .flo file.
With --video, the flow between each pair of consecutive frames, as a video (.mp4, .mov, .mkv) or a
folder of PNGs; needs ffmpeg. Images of any size are tiled at the model's training size.

Options:
  --out FILE|DIR          where to write the picture (or video / folder)
  --flo FILE              also write the flow as a .flo file (two images only)
  --video FILE            a video instead of two images
  --batch-size 4          tiles per forward
  --max-frames 250        video: most frames read
${COMMON.replace('checkpoint folder or Hugging Face Hub id', 'default deepmind/optical-flow-perceiver')}`,
  autoencode: `Usage: perceiver-io autoencode VIDEO --out DIR [options]

Multimodal autoencoding of a clip of VIDEO (frames and audio, read with ffmpeg): encodes once,
decodes in chunks, and writes DIR/frame_NNN.png, reconstruction.mp4, reconstruction.wav,
original.wav, comparison.png (original frames over their reconstruction) and labels.json. Prints
the files and the top labels as JSON.

Options:
  --out DIR               output folder
  --chunks 16             decode calls the output points are split into
  --top-k 5               labels to keep
  --no-video              skip reconstruction.mp4
${COMMON.replace('checkpoint folder or Hugging Face Hub id', 'default deepmind/multimodal-perceiver')}`,
};

export const PIPELINE_COMMANDS = Object.freeze(Object.keys(HELP));

type Values = Record<string, string | boolean | undefined>;

function parse(command: string, args: string[], extra: Record<string, { type: 'string' | 'boolean' }>) {
  try {
    const parsed = parseArgs({
      args,
      options: { ...extra, model: { type: 'string' }, device: { type: 'string' }, dtype: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: true,
    });
    return { values: parsed.values as Values, positionals: parsed.positionals };
  } catch (error) {
    throw new UsageError(`${command}: ${(error as Error).message}`);
  }
}

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

/** Runs one pipeline command; resolves the exit code. */
export async function runPipelineCommand(command: string, args: string[]): Promise<number> {
  const options = {
    'fill-mask': { 'top-k': { type: 'string' } },
    predict: { 'top-k': { type: 'string' } },
    flow: { out: { type: 'string' }, flo: { type: 'string' }, video: { type: 'string' }, 'batch-size': { type: 'string' }, 'max-frames': { type: 'string' } },
    autoencode: { out: { type: 'string' }, chunks: { type: 'string' }, 'top-k': { type: 'string' }, 'no-video': { type: 'boolean' } },
  }[command] as Record<string, { type: 'string' | 'boolean' }> | undefined;
  if (!options) throw new UsageError(`unknown command "${command}" (try --help)`);
  const { values, positionals } = parse(command, args, options);
  if (values.help) {
    process.stdout.write(HELP[command] + '\n');
    return 0;
  }
  const { pipeline } = await import('../pipelines/index.js');
  const load = { device: values.device as string | undefined, dtype: values.dtype as ComputeDType | undefined, hub: {} };
  const progress = process.stderr.isTTY ? { progressCallback: (e: { file: string; received: number; total: number }) => process.stderr.write(`\r${e.file}: ${Math.floor((100 * e.received) / Math.max(1, e.total))}%`) } : {};
  const model = (fallback: string | undefined): string => {
    const m = (values.model as string | undefined) ?? fallback;
    if (!m) throw new UsageError(`${command} needs --model`);
    return m;
  };

  if (command === 'fill-mask') {
    if (positionals.length !== 1) throw new UsageError('fill-mask takes one TEXT (quote it), with at least one [MASK]');
    await using pipe = await pipeline('fill-mask', model('deepmind/language-perceiver'), { ...load, ...progress });
    const result = await pipe(positionals[0]!, { top_k: integer(values, 'top-k') });
    print({ masks: Array.isArray(result[0]) ? result : [result], spans: result.spans });
    return 0;
  }

  if (command === 'predict') {
    if (positionals.length !== 1) throw new UsageError('predict takes one INPUT (a text or an image file)');
    const { PerceiverConfig } = await import('../config.js');
    const { checkpointFolder } = await import('../modeling/perceiver_model.js');
    const folder = await checkpointFolder(model(undefined), progress.progressCallback ? { progress: progress.progressCallback } : {});
    const head = (await PerceiverConfig.fromPretrained(folder)).architectures?.[0];
    const topK = integer(values, 'top-k') ?? 5;
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
    if (typeof values.out !== 'string' || values.out === '') throw new UsageError('flow needs --out');
    const video = values.video as string | undefined;
    if (video === undefined ? positionals.length !== 2 : positionals.length !== 0) throw new UsageError('flow takes two images A B, or --video V (not both)');
    if (video !== undefined && values.flo !== undefined) throw new UsageError('--flo is for two images; a video gives one field per frame pair');
    const { writeFlowPicture, writeFlowVideo } = await import('../pipelines/write.js');
    if (video === undefined && !values.out.toLowerCase().endsWith('.png')) throw new UsageError('flow of two images writes a PNG: --out must end in .png');
    await using pipe = await pipeline('optical-flow', model('deepmind/optical-flow-perceiver'), { ...load, ...progress });
    const runOptions = { batchSize: integer(values, 'batch-size'), maxFrames: integer(values, 'max-frames') };
    if (video !== undefined) {
      const result = await pipe({ video }, runOptions);
      if (!('fields' in result)) throw new Error('unreachable: a video gives fields');
      const files = await writeFlowVideo(values.out, result.fields, { fps: result.fps });
      print({ pairs: result.fields.length, fps: result.fps, width: result.fields[0]?.width, height: result.fields[0]?.height, files });
    } else {
      const field = await pipe([positionals[0]!, positionals[1]!], runOptions);
      if ('fields' in field) throw new Error('unreachable: two images give one field');
      await writeFlowPicture(values.out, field, values.flo as string | undefined);
      print({ width: field.width, height: field.height, files: [values.out, ...(values.flo ? [values.flo] : [])] });
    }
    return 0;
  }

  // autoencode
  if (positionals.length !== 1) throw new UsageError('autoencode takes one VIDEO');
  if (typeof values.out !== 'string' || values.out === '') throw new UsageError('autoencode needs --out');
  const { writeAutoencoding } = await import('../pipelines/write.js');
  await using pipe = await pipeline('video-autoencoding', model('deepmind/multimodal-perceiver'), { ...load, ...progress });
  const result = await pipe(positionals[0]!, { chunks: integer(values, 'chunks'), top_k: integer(values, 'top-k') });
  const files = await writeAutoencoding(values.out, result, { video: values['no-video'] !== true });
  print({ labels: result.labels, files });
  return 0;
}
