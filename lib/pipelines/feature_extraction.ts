/**
 * 'feature-extraction': embeddings from the latents (model.embed, the batch job's definition), for
 * any checkpoint the batch job reads files for:
 *
 * - text models: a string (or an array of strings) is text, tokenized, truncated to the model's
 *   length and padded with its attention mask; `{ path }` reads a text file as the batch job does;
 * - image models: a file path (image, or a video's middle frame), encoded image bytes or raw
 *   pixels, preprocessed by the checkpoint's processor;
 * - multimodal autoencoding: a path to a video, audio or image file (a clip as the batch job makes it).
 *
 * Options as transformers.js's: `pooling` 'mean' (default, [batch, d_latents]) or 'none'
 * ([batch, num_latents, d_latents]); `normalize` divides each embedding by its L2 norm.
 */
import { InvalidArgumentError } from '../errors.js';
import type { ImageInput, PerceiverImageProcessor } from '../image_processor.js';
import { mediaKindOf } from '../media/kinds.js';
import { createMediaInputBuilder, type MediaInputBuilder } from '../media/model_inputs.js';
import type { Logits, PerceiverModel } from '../modeling/perceiver_model.js';
import { Tensor } from '../tensor.js';
import type { CallOptions, StepCheck } from './common.js';
import { tokenizeForModel } from './text_classification.js';

export interface FeatureExtractionOptions extends CallOptions {
  pooling?: 'mean' | 'none';
  normalize?: boolean;
}

/** A text (text models), a file `{ path }` or path string (other models), or image bytes / raw pixels (image models). */
export type FeatureInput = string | { path: string } | ImageInput;

export const FEATURE_EXTRACTION_HEADS = [
  'PerceiverForMaskedLM',
  'PerceiverForSequenceClassification',
  'PerceiverForImageClassificationLearned',
  'PerceiverForImageClassificationFourier',
  'PerceiverForImageClassificationConvProcessing',
  'PerceiverForMultimodalAutoencoding',
] as const;

function isPathObject(value: unknown): value is { path: string } {
  return typeof value === 'object' && value !== null && !ArrayBuffer.isView(value) && Object.keys(value).length === 1 && typeof (value as { path?: unknown }).path === 'string';
}

/** Each row divided by its L2 norm (over the last axis). */
export function l2Normalize(t: Tensor<'float32'>): Tensor<'float32'> {
  const d = t.shape[t.shape.length - 1]!;
  const out = new Float32Array(t.data.length);
  for (let r = 0; r < t.data.length; r += d) {
    let sum = 0;
    for (let i = 0; i < d; i++) sum += t.data[r + i]! * t.data[r + i]!;
    const norm = Math.sqrt(sum) || 1;
    for (let i = 0; i < d; i++) out[r + i] = t.data[r + i]! / norm;
  }
  return new Tensor('float32', t.shape, out);
}

export function featureExtractionRunner(model: PerceiverModel<Logits>, processor: PerceiverImageProcessor | undefined) {
  const pre = model.inputPreprocessor;
  const isText = pre.inputKind === 'text';
  const isImage = pre.inputKind === 'image';
  const builder: MediaInputBuilder = createMediaInputBuilder(model, { imageProcessor: processor });
  return async (input: FeatureInput | FeatureInput[], options: FeatureExtractionOptions, check: StepCheck): Promise<Tensor<'float32'>> => {
    const pooling = options.pooling ?? 'mean';
    if (pooling !== 'mean' && pooling !== 'none') throw new InvalidArgumentError('options.pooling', "'mean' or 'none'", pooling);
    if (options.normalize !== undefined && typeof options.normalize !== 'boolean') throw new InvalidArgumentError('options.normalize', 'a boolean', options.normalize);
    const list = Array.isArray(input) ? input : [input];
    if (list.length === 0) throw new InvalidArgumentError('input', 'an input or a non-empty array of inputs', input);
    let call: { inputs: Tensor | Record<string, Tensor>; attentionMask?: Tensor };
    if (isText && list.every((x) => typeof x === 'string')) {
      call = tokenizeForModel(model, list as string[]);
    } else if (isImage && processor && list.every((x) => !isPathObject(x) && !(typeof x === 'string' && mediaKindOf(x) === 'video'))) {
      // Image paths, bytes and raw pixels through the checkpoint's processor; videos (their middle frame) below.
      call = { inputs: await processor.preprocess(list as ImageInput[]) };
    } else {
      const items = [];
      for (const [i, x] of list.entries()) {
        const path = isPathObject(x) ? x.path : x;
        if (typeof path !== 'string') throw new InvalidArgumentError(`input[${i}]`, `a file path or { path } for ${model.constructor.name}`, x);
        items.push(await builder.load(path));
        check();
      }
      call = builder.collate(items);
    }
    check();
    const embeddings = await model.embed(call.inputs, { pooling, attentionMask: call.attentionMask });
    check();
    return options.normalize ? l2Normalize(embeddings) : embeddings;
  };
}
