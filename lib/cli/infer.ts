/**
 * `perceiver-io infer`: the tensors-in / tensors-out interface Python users compare against.
 * Input and output names follow the golden fixtures (see README): keep them stable.
 */
import { AutoModel } from '../auto.js';
import { InvalidArgumentError } from '../errors.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { ComputeDType } from '../modeling/perceiver_model.js';
import { Tensor } from '../tensor.js';

export interface InferOptions {
  model: string;
  inputs: string;
  output: string;
  device: string;
  dtype: string;
}

/** Runs one checkpoint on one inputs file; returns a one-line summary. */
export async function runInfer(options: InferOptions): Promise<string> {
  const { tensors } = await readSafetensors(options.inputs);
  const modalities = [...tensors.keys()].filter((k) => k.startsWith('input.')).map((k) => k.slice('input.'.length));
  if (modalities.length > 0) {
    throw new InvalidArgumentError('--inputs', 'a single "input" tensor (multimodal inputs are not supported by the text heads)', `tensors ${modalities.map((m) => `input.${m}`).join(', ')}`);
  }
  const inputs = tensors.get('input');
  if (!inputs) {
    throw new InvalidArgumentError('--inputs', 'a safetensors file with an "input" tensor', `tensors ${[...tensors.keys()].join(', ') || '(none)'}`);
  }
  const subsampled = [...tensors.keys()].filter((k) => k.startsWith('call.subsampled_output_points.'));
  if (subsampled.length > 0) {
    throw new InvalidArgumentError('--inputs', 'no subsampled output points for this model', subsampled.join(', '));
  }
  const model = await AutoModel.fromPretrained(options.model, { device: options.device, dtype: options.dtype as ComputeDType });
  try {
    const out = await model.forward({ inputs, attentionMask: tensors.get('call.attention_mask') });
    const written: Record<string, Tensor> = { last_hidden_state: out.lastHiddenState };
    if (out.logits) written.logits = out.logits;
    await writeSafetensors(options.output, written, { model_class: model.constructor.name, producer: 'perceiver-io' });
    const shapes = Object.entries(written).map(([k, t]) => `${k} [${t.shape.join(', ')}]`);
    return `perceiver-io: ${model.constructor.name} on ${model.device}: wrote ${shapes.join(', ')} to ${options.output}`;
  } finally {
    await model.dispose();
  }
}
