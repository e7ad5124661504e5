/**
 * Input preprocessors. Each validates what a caller passes for its modality, turns it into the
 * engine's request, and describes its weights; the computation itself runs natively.
 */
import type { PerceiverConfig } from '../config.js';
import { InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import type { NativeForwardRequest } from '../native/binding.js';
import type { TextPreprocessorSpec } from './spec.js';
import type { WeightStore } from './weights.js';

export interface PreprocessorCall {
  inputs: unknown;
  attentionMask?: unknown;
}

export interface PerceiverPreprocessor {
  /** Width of what the encoder cross-attends to (transformers' `num_channels`). */
  readonly numChannels: number;
  spec(weights: WeightStore, prefix: string): TextPreprocessorSpec;
  request(call: PreprocessorCall): Omit<NativeForwardRequest, 'outputHiddenStates' | 'outputAttentions'>;
}

const MASK_DTYPES = ['int64', 'int32', 'int8', 'uint8', 'bool', 'float32', 'float64'];

/** transformers' PerceiverTextPreprocessor: byte embeddings plus learned absolute positions. */
export class PerceiverTextPreprocessor implements PerceiverPreprocessor {
  readonly vocabSize: number;
  readonly maxPositionEmbeddings: number;
  readonly numChannels: number;

  constructor(config: PerceiverConfig) {
    this.vocabSize = config.vocab_size;
    this.maxPositionEmbeddings = config.max_position_embeddings;
    this.numChannels = config.d_model;
  }

  spec(weights: WeightStore, prefix: string): TextPreprocessorSpec {
    return {
      type: 'text',
      embeddings: weights.take(`${prefix}.embeddings.weight`, [this.vocabSize, this.numChannels]),
      positionEmbeddings: weights.take(`${prefix}.position_embeddings.weight`, [this.maxPositionEmbeddings, this.numChannels]),
      vocabSize: this.vocabSize,
      maxPositionEmbeddings: this.maxPositionEmbeddings,
      dModel: this.numChannels,
    };
  }

  request(call: PreprocessorCall): Omit<NativeForwardRequest, 'outputHiddenStates' | 'outputAttentions'> {
    const ids = call.inputs;
    if (!(ids instanceof Tensor)) throw new InvalidArgumentError('inputs', 'a Tensor of token ids with shape [batch, sequence]', ids);
    if (ids.dtype !== 'int64' && ids.dtype !== 'int32') {
      throw new InvalidArgumentError('inputs', 'token ids of dtype int64 or int32', `dtype ${ids.dtype}`);
    }
    if (ids.rank !== 2 || ids.shape[0]! < 1 || ids.shape[1]! < 1) {
      throw new InvalidArgumentError('inputs', 'shape [batch, sequence] with both at least 1', `shape [${ids.shape.join(', ')}]`);
    }
    const [batch, seq] = ids.shape as [number, number];
    if (seq > this.maxPositionEmbeddings) {
      throw new InvalidArgumentError('inputs', `a sequence of at most max_position_embeddings = ${this.maxPositionEmbeddings} tokens`, `${seq} tokens`);
    }
    for (let i = 0; i < ids.size; i++) {
      const id = Number(ids.data[i]);
      if (!(id >= 0 && id < this.vocabSize)) {
        throw new InvalidArgumentError('inputs', `token ids in [0, ${this.vocabSize})`, `${id} at [${Math.floor(i / seq)}, ${i % seq}]`);
      }
    }
    return { batch, seq, inputIds: ids.data as BigInt64Array | Int32Array, attentionMask: keyMask(call.attentionMask, batch, seq) };
  }
}

/** Validates an attention mask of shape [batch, seq] (1 = attend, 0 = padding) into bytes. */
function keyMask(mask: unknown, batch: number, seq: number): Uint8Array | undefined {
  if (mask === undefined || mask === null) return undefined;
  if (!(mask instanceof Tensor)) throw new InvalidArgumentError('attentionMask', `a Tensor of shape [${batch}, ${seq}]`, mask);
  if (!MASK_DTYPES.includes(mask.dtype)) throw new InvalidArgumentError('attentionMask', `one of dtypes ${MASK_DTYPES.join(', ')}`, `dtype ${mask.dtype}`);
  if (mask.rank !== 2 || mask.shape[0] !== batch || mask.shape[1] !== seq) {
    throw new InvalidArgumentError('attentionMask', `shape [${batch}, ${seq}] (the shape of inputs)`, `shape [${mask.shape.join(', ')}]`);
  }
  const out = new Uint8Array(batch * seq);
  for (let b = 0; b < batch; b++) {
    let any = false;
    for (let j = 0; j < seq; j++) {
      const v = Number(mask.data[b * seq + j]);
      if (v !== 0 && v !== 1) throw new InvalidArgumentError('attentionMask', 'values 0 or 1', `${v} at [${b}, ${j}]`);
      out[b * seq + j] = v;
      any ||= v === 1;
    }
    if (!any) {
      throw new InvalidArgumentError('attentionMask', 'at least one attended (1) position in every row', `row ${b} with every position masked`);
    }
  }
  return out;
}
