/**
 * 'text-classification': a PerceiverForSequenceClassification checkpoint. A text (or an array of
 * texts, batched with padding and its attention mask) gives transformers.js's `[{label, score}]`:
 * the top_k labels (default 1) by softmax probability, named by config.id2label.
 */
import { InvalidArgumentError } from '../errors.js';
import type { Logits, PerceiverModel } from '../modeling/perceiver_model.js';
import type { Tensor } from '../tensor.js';
import { PerceiverTokenizer } from '../tokenizer.js';
import { checkTopK, topLabels, type CallOptions, type LabelScore, type StepCheck } from './common.js';

export interface ClassificationOptions extends CallOptions {
  /** Labels per input (default 1). */
  top_k?: number;
}

export const TEXT_CLASSIFICATION_HEADS = ['PerceiverForSequenceClassification'] as const;

/** Tokenized, truncated to the model's length, padded, with the mask that keeps the padding out. */
export function tokenizeForModel(model: PerceiverModel<Logits>, texts: string[]): { inputs: Tensor<'int64'>; attentionMask: Tensor<'int64'> } {
  const maxLength = model.config.max_position_embeddings;
  const tokenizer = new PerceiverTokenizer({ modelMaxLength: maxLength });
  const { inputIds, attentionMask } = tokenizer.call(texts, { maxLength, truncation: true, padding: 'longest' });
  return { inputs: inputIds, attentionMask };
}

export function textClassificationRunner(model: PerceiverModel<Logits>) {
  return async (input: string | string[], options: ClassificationOptions, check: StepCheck): Promise<LabelScore[] | LabelScore[][]> => {
    const texts = typeof input === 'string' ? [input] : input;
    if (!Array.isArray(texts) || texts.length === 0 || texts.some((t) => typeof t !== 'string')) throw new InvalidArgumentError('input', 'a string or a non-empty array of strings', input);
    const topK = checkTopK(options.top_k, 1, model.config.num_labels);
    const out = await model.forward(tokenizeForModel(model, texts));
    check();
    const logits = out.logits as Tensor<'float32'>;
    const n = logits.shape[1]!;
    const rows = texts.map((_, b) => topLabels(model.config, logits.data.subarray(b * n, (b + 1) * n), topK));
    return typeof input === 'string' ? rows[0]! : rows;
  };
}
