/**
 * `perceiver-io infer`: the tensors-in / tensors-out interface Python users compare against.
 * Input and output names follow the golden fixtures (see README): keep them stable.
 *   in:  input | input.<modality>, call.attention_mask, call.subsampled_output_points.<modality>
 *   out: logits | logits.<modality>, last_hidden_state (float32)
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

const POINTS = 'call.subsampled_output_points.';

/** Runs one checkpoint on one inputs file; returns a one-line summary. */
export async function runInfer(options: InferOptions): Promise<string> {
  const { tensors } = await readSafetensors(options.inputs);
  const names = [...tensors.keys()];
  const modalities = names.filter((k) => k.startsWith('input.')).map((k) => k.slice('input.'.length));
  let inputs: Tensor | Record<string, Tensor>;
  if (modalities.length > 0) {
    if (tensors.has('input')) throw new InvalidArgumentError('--inputs', 'either "input" or "input.<modality>" tensors, not both', 'both');
    inputs = Object.fromEntries(modalities.map((m) => [m, tensors.get(`input.${m}`)!]));
  } else {
    const single = tensors.get('input');
    if (!single) throw new InvalidArgumentError('--inputs', 'a safetensors file with an "input" (or "input.<modality>") tensor', `tensors ${names.join(', ') || '(none)'}`);
    inputs = single;
  }
  const pointNames = names.filter((k) => k.startsWith(POINTS));
  const subsampledOutputPoints = pointNames.length
    ? Object.fromEntries(pointNames.map((k) => [k.slice(POINTS.length), tensors.get(k)!]))
    : undefined;

  const model = await AutoModel.fromPretrained(options.model, { device: options.device, dtype: options.dtype as ComputeDType, hub: { progress: true } });
  try {
    const single = (model.decoder?.outputModalities.length ?? 0) === 0;
    const points = subsampledOutputPoints && single ? (subsampledOutputPoints[''] ?? Object.values(subsampledOutputPoints)[0]) : subsampledOutputPoints;
    const out = await model.forward({ inputs, attentionMask: tensors.get('call.attention_mask'), subsampledOutputPoints: points });
    const written: Record<string, Tensor> = { last_hidden_state: out.lastHiddenState };
    if (out.logits instanceof Tensor) written.logits = out.logits;
    else if (out.logits) for (const [m, t] of Object.entries(out.logits)) written[`logits.${m}`] = t;
    await writeSafetensors(options.output, written, { model_class: model.constructor.name, producer: 'perceiver-io' });
    const shapes = Object.entries(written).map(([k, t]) => `${k} [${t.shape.join(', ')}]`);
    return `perceiver-io: ${model.constructor.name} on ${model.device}: wrote ${shapes.join(', ')} to ${options.output}`;
  } finally {
    await model.dispose();
  }
}
