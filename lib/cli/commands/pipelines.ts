/** The pipeline commands (fill-mask, predict, flow, autoencode): their option tables and entry (the work is in ../pipelines.ts). */
import type { CommandSpec, OptionSpec } from '../spec.js';
import { runCommand } from '../spec.js';

/** --model, --device, --dtype: every pipeline command takes them; `model` is its default checkpoint, if any. */
function loadOptions(model?: string): Record<string, OptionSpec> {
  return {
    model: { type: 'string', value: 'DIR|ID', ...(model ? { default: model } : { required: true }), help: 'checkpoint folder or Hugging Face Hub id' },
    device: { type: 'string', value: 'DEVICE', default: 'cpu', help: 'where to run (cpu, cuda, cuda:N)' },
    dtype: { type: 'string', value: 'DTYPE', default: 'float32', help: 'compute precision (float32; tfloat32, float16, bfloat16 on CUDA)' },
  };
}

export const FILL_MASK: CommandSpec = {
  name: 'fill-mask',
  summary: 'fill the [MASK]s in a text with a masked language model',
  usage: ['fill-mask [options] TEXT'],
  description: `Fills every [MASK] in TEXT (one byte each) with a masked language model. Prints JSON:
{"masks": [[{score, token, token_str, sequence}, ...] per mask], "spans": [{text, score, sequence}]}
(runs of consecutive masks decoded together).`,
  options: { 'top-k': { type: 'string', value: 'N', default: '5', help: 'candidates per mask' }, ...loadOptions('deepmind/language-perceiver') },
  positionals: true,
};

export const PREDICT: CommandSpec = {
  name: 'predict',
  summary: 'classify one text or image',
  usage: ['predict --model DIR|ID [options] INPUT'],
  description: `Classifies one input: a text for a text-classification checkpoint, an image file for an image
classifier. Prints JSON [{label, score}, ...].`,
  options: { 'top-k': { type: 'string', value: 'N', default: '5', help: 'labels to print' }, ...loadOptions() },
  positionals: true,
};

export const FLOW: CommandSpec = {
  name: 'flow',
  summary: 'optical flow between two images, or along a video',
  usage: ['flow A B --out flow.png [--flo flow.flo] [options]', 'flow --video V --out flow.mp4|DIR [options]'],
  description: `Optical flow from image A to image B, written as a PNG in the Middlebury colour coding (hue =
direction, saturation = magnitude over the largest) and optionally as a Middlebury .flo file.
With --video, the flow between each pair of consecutive frames, as a video (.mp4, .mov, .mkv) or a
folder of PNGs; needs ffmpeg. Images of any size are tiled at the model's training size.`,
  options: {
    out: { type: 'string', value: 'FILE|DIR', required: true, help: 'where to write the picture (or video / folder)' },
    flo: { type: 'string', value: 'FILE', help: 'also write the flow as a .flo file (two images only)' },
    video: { type: 'string', value: 'FILE', help: 'a video instead of two images' },
    'batch-size': { type: 'string', value: 'N', default: '4', help: 'tiles per forward' },
    'max-frames': { type: 'string', value: 'N', default: '250', help: 'video: most frames read' },
    ...loadOptions('deepmind/optical-flow-perceiver'),
  },
  positionals: true,
};

export const AUTOENCODE: CommandSpec = {
  name: 'autoencode',
  summary: 'multimodal autoencoding of a video clip (frames, audio, labels)',
  usage: ['autoencode VIDEO --out DIR [options]'],
  description: `Multimodal autoencoding of a clip of VIDEO (frames and audio, read with ffmpeg): encodes once,
decodes in chunks, and writes DIR/frame_NNN.png, reconstruction.mp4, reconstruction.wav,
original.wav, comparison.png (original frames over their reconstruction) and labels.json. Prints
the files and the top labels as JSON.`,
  options: {
    out: { type: 'string', value: 'DIR', required: true, help: 'output folder' },
    chunks: { type: 'string', value: 'N', default: '16', help: 'decode calls the output points are split into' },
    'top-k': { type: 'string', value: 'N', default: '5', help: 'labels to keep' },
    'no-video': { type: 'boolean', help: 'skip reconstruction.mp4' },
    ...loadOptions('deepmind/multimodal-perceiver'),
  },
  positionals: true,
};

export const PIPELINE_SPECS = [FILL_MASK, PREDICT, FLOW, AUTOENCODE] as const;

export function pipelineCommand(spec: CommandSpec, args: string[]): Promise<number> {
  return runCommand(spec, args, async ({ values, positionals }) => (await import('../pipelines.js')).runPipelineCommand(spec.name, values, positionals));
}
