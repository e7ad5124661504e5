/**
 * 'fill-mask': the byte-level masked language model (deepmind/language-perceiver). Every `[MASK]`
 * in the text is the mask token and stands for one byte. The output has transformers.js's shape:
 * for one mask, the top_k candidates `{score, token, token_str, sequence}`; for several, one such
 * array per mask in text order. Runs of consecutive masks are also decoded together as a span (the
 * most likely byte at each position, decoded as UTF-8): `result.spans` on the array.
 */
import { InvalidArgumentError } from '../errors.js';
import type { Logits, PerceiverModel } from '../modeling/perceiver_model.js';
import { Tensor } from '../tensor.js';
import { PerceiverTokenizer } from '../tokenizer.js';
import { checkTopK, softmax, topIndices, type CallOptions, type StepCheck } from './common.js';

export interface FillMaskOptions extends CallOptions {
  /** Candidates per masked position (default 5). */
  top_k?: number;
}

export interface FillMaskCandidate {
  score: number;
  token: number;
  token_str: string;
  /** The text with this candidate at this mask (other masks left as they are). */
  sequence: string;
}

export interface FillMaskSpan {
  /** Where the run of masks starts in the token ids (after [CLS]) and how many masks it has. */
  start: number;
  length: number;
  /** The most likely bytes of the run, decoded as UTF-8. */
  text: string;
  /** Product of each position's top probability. */
  score: number;
  /** The text with the span filled in. */
  sequence: string;
}

/** One mask: its candidates. Several: one array per mask. Both carry the decoded spans. */
export type FillMaskOutput = (FillMaskCandidate[] | FillMaskCandidate[][]) & { spans: FillMaskSpan[] };

export const FILL_MASK_HEADS = ['PerceiverForMaskedLM'] as const;

export function fillMaskRunner(model: PerceiverModel<Logits>) {
  const maxLength = model.config.max_position_embeddings;
  const tokenizer = new PerceiverTokenizer({ modelMaxLength: maxLength });
  return async (text: string, options: FillMaskOptions, check: StepCheck): Promise<FillMaskOutput> => {
    if (typeof text !== 'string') throw new InvalidArgumentError('text', 'a string with at least one [MASK]', text);
    const topK = checkTopK(options.top_k, 5, tokenizer.vocabSize);
    const ids = tokenizer.encode(text, { maxLength, truncation: true });
    const masks = ids.flatMap((id, i) => (id === tokenizer.maskTokenId ? [i] : []));
    if (masks.length === 0) {
      throw new InvalidArgumentError('text', `a text with at least one [MASK] within the model's ${maxLength} tokens`, text.includes('[MASK]') ? 'masks only past the truncation length' : text);
    }
    const shape = [1, ids.length];
    const out = await model.forward({
      inputs: new Tensor('int64', shape, BigInt64Array.from(ids, BigInt)),
      attentionMask: new Tensor('int64', shape, new BigInt64Array(ids.length).fill(1n)),
    });
    check();
    const logits = out.logits as Tensor<'float32'>;
    const vocab = logits.shape[2]!;
    const probsAt = (pos: number) => softmax(logits.data.subarray(pos * vocab, (pos + 1) * vocab));
    const fill = (replacements: Map<number, number>) => tokenizer.decode(ids.map((id, i) => replacements.get(i) ?? id), { skipSpecialTokens: false }).replace(/^\[CLS\]|\[SEP\]$/g, '');
    const perMask = masks.map((pos) => {
      const probs = probsAt(pos);
      return topIndices(probs, topK).map((token) => ({
        score: probs[token]!,
        token,
        token_str: tokenizer.decode([token]),
        sequence: fill(new Map([[pos, token]])),
      }));
    });
    const spans: FillMaskSpan[] = [];
    for (let i = 0; i < masks.length; ) {
      let j = i;
      while (j + 1 < masks.length && masks[j + 1] === masks[j]! + 1) j++;
      const positions = masks.slice(i, j + 1);
      const best = positions.map((pos, k) => ({ pos, token: perMask[i + k]![0]!.token, score: perMask[i + k]![0]!.score }));
      spans.push({
        start: positions[0]! - 1,
        length: positions.length,
        text: tokenizer.decode(best.map((b) => b.token), { skipSpecialTokens: true }),
        score: best.reduce((p, b) => p * b.score, 1),
        sequence: fill(new Map(best.map((b) => [b.pos, b.token]))),
      });
      i = j + 1;
    }
    const result = (perMask.length === 1 ? perMask[0]! : perMask) as FillMaskOutput;
    Object.defineProperty(result, 'spans', { value: spans, enumerable: false });
    return result;
  };
}
