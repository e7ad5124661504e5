/**
 * 'image-classification': the three vision heads. Images are file paths, bytes of an encoded image
 * or raw pixels {data, width, height, channels}, preprocessed as the checkpoint's
 * preprocessor_config.json says (PerceiverImageProcessor.fromPretrained); without that file, as the
 * batch job does (transformers' defaults scaled to config.image_size). Output: transformers.js's
 * `[{label, score}]`, top_k labels (default 1); an array of images gives one such array each.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { PerceiverImageProcessor, type ImageInput } from '../image_processor.js';
import { defaultImageProcessor } from '../media/model_inputs.js';
import type { Logits, PerceiverModel } from '../modeling/perceiver_model.js';
import type { Tensor } from '../tensor.js';
import { checkTopK, topLabels, type CallOptions, type LabelScore, type StepCheck } from './common.js';
import type { ClassificationOptions } from './text_classification.js';

export const IMAGE_CLASSIFICATION_HEADS = [
  'PerceiverForImageClassificationLearned',
  'PerceiverForImageClassificationFourier',
  'PerceiverForImageClassificationConvProcessing',
] as const;

/** The checkpoint's own image processor, or the batch job's default at config.image_size. */
export async function imageProcessorFor(folder: string, model: PerceiverModel<Logits>): Promise<PerceiverImageProcessor> {
  const has = await access(join(folder, 'preprocessor_config.json')).then(() => true, () => false);
  return has ? PerceiverImageProcessor.fromPretrained(folder) : defaultImageProcessor(model.config.image_size);
}

export function isImageList(input: unknown): input is ImageInput[] {
  return Array.isArray(input);
}

export function imageClassificationRunner(model: PerceiverModel<Logits>, processor: PerceiverImageProcessor) {
  return async (input: ImageInput | ImageInput[], options: ClassificationOptions & CallOptions, check: StepCheck): Promise<LabelScore[] | LabelScore[][]> => {
    if (isImageList(input) && input.length === 0) throw new InvalidArgumentError('input', 'an image or a non-empty array of images', input);
    const topK = checkTopK(options.top_k, 1, model.config.num_labels);
    const pixels = await processor.preprocess(input);
    check();
    const out = await model.forward({ inputs: pixels });
    check();
    const logits = out.logits as Tensor<'float32'>;
    const n = logits.shape[1]!;
    const rows = Array.from({ length: logits.shape[0]! }, (_, b) => topLabels(model.config, logits.data.subarray(b * n, (b + 1) * n), topK));
    return isImageList(input) ? rows : rows[0]!;
  };
}
