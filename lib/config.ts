/**
 * PerceiverConfig: every field of transformers' PerceiverConfig (and the PretrainedConfig fields a
 * Perceiver checkpoint uses), read from a checkpoint's config.json. Field names are kept exactly
 * as config.json spells them, so a config reads the same here as in Python.
 */
import { join } from 'node:path';
import { ConfigError, InvalidArgumentError, describeValue } from './errors.js';
import { readJsonObject } from './io/read_json.js';

export interface PerceiverConfigFields {
  num_latents: number;
  d_latents: number;
  d_model: number;
  num_blocks: number;
  num_self_attends_per_block: number;
  num_self_attention_heads: number;
  num_cross_attention_heads: number;
  qk_channels: number | null;
  v_channels: number | null;
  cross_attention_shape_for_attention: 'kv' | 'q';
  self_attention_widening_factor: number;
  cross_attention_widening_factor: number;
  hidden_act: string;
  attention_probs_dropout_prob: number;
  initializer_range: number;
  /** Present in every config, but transformers never passes it to its LayerNorms (they use 1e-5). */
  layer_norm_eps: number;
  use_query_residual: boolean;
  vocab_size: number;
  max_position_embeddings: number;
  image_size: number;
  train_size: number[];
  num_frames: number;
  audio_samples_per_frame: number;
  samples_per_patch: number;
  output_shape: number[];
  output_num_channels: number;
  _label_trainable_num_channels: number;
  // PretrainedConfig fields.
  architectures: string[] | null;
  model_type: string;
  id2label: Record<string, string>;
  label2id: Record<string, number>;
  problem_type: string | null;
  chunk_size_feed_forward: number;
  dtype: string | null;
  transformers_version: string | null;
}

const DEFAULTS: PerceiverConfigFields = {
  num_latents: 256,
  d_latents: 1280,
  d_model: 768,
  num_blocks: 1,
  num_self_attends_per_block: 26,
  num_self_attention_heads: 8,
  num_cross_attention_heads: 8,
  qk_channels: null,
  v_channels: null,
  cross_attention_shape_for_attention: 'kv',
  self_attention_widening_factor: 1,
  cross_attention_widening_factor: 1,
  hidden_act: 'gelu',
  attention_probs_dropout_prob: 0.1,
  initializer_range: 0.02,
  layer_norm_eps: 1e-12,
  use_query_residual: true,
  vocab_size: 262,
  max_position_embeddings: 2048,
  image_size: 56,
  train_size: [368, 496],
  num_frames: 16,
  audio_samples_per_frame: 1920,
  samples_per_patch: 16,
  output_shape: [1, 16, 224, 224],
  output_num_channels: 512,
  _label_trainable_num_channels: 1024,
  architectures: null,
  model_type: 'perceiver',
  id2label: { '0': 'LABEL_0', '1': 'LABEL_1' },
  label2id: { LABEL_0: 0, LABEL_1: 1 },
  problem_type: null,
  chunk_size_feed_forward: 0,
  dtype: null,
  transformers_version: null,
};

const MAX_DIM = 1 << 24;
const MAX_LAYERS = 4096;
const MAX_LABELS = 1 << 17;

const POSITIVE_INTS = [
  'num_latents', 'd_latents', 'd_model', 'num_blocks', 'num_self_attends_per_block', 'num_self_attention_heads',
  'num_cross_attention_heads', 'self_attention_widening_factor', 'cross_attention_widening_factor', 'vocab_size',
  'max_position_embeddings', 'image_size', 'num_frames', 'audio_samples_per_frame', 'samples_per_patch',
  'output_num_channels', '_label_trainable_num_channels',
] as const;

/** A value as JSON for a message (as config.json spelled it), or described when it has no JSON form (a bigint, a cycle). */
function shown(value: unknown): string {
  try {
    return JSON.stringify(value) ?? describeValue(value);
  } catch {
    return describeValue(value);
  }
}

export interface PerceiverConfig extends PerceiverConfigFields {}

export class PerceiverConfig {
  /** Keys of config.json this class has no field for, kept as they were. */
  readonly extra: Record<string, unknown>;

  constructor(fields: Partial<PerceiverConfigFields> & Record<string, unknown> = {}) {
    if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) {
      throw new ConfigError('a Perceiver config must be a JSON object');
    }
    const merged: Record<string, unknown> = { ...DEFAULTS };
    const extra: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(fields)) {
      if (key === 'torch_dtype') merged.dtype = value; // the name before transformers 4.56
      else if (key in DEFAULTS) merged[key] = value;
      else extra[key] = value;
    }
    // transformers derives the label maps from num_labels when only that is given.
    if (fields.id2label === undefined && typeof extra.num_labels === 'number') {
      const n = extra.num_labels;
      if (!Number.isSafeInteger(n) || n < 1 || n > MAX_LABELS) throw new ConfigError(`num_labels must be an integer in [1, ${MAX_LABELS}], got ${shown(n)}`);
      merged.id2label = Object.fromEntries(Array.from({ length: n }, (_, i) => [String(i), `LABEL_${i}`]));
      merged.label2id = Object.fromEntries(Array.from({ length: n }, (_, i) => [`LABEL_${i}`, i]));
    }
    delete extra.num_labels;
    Object.assign(this, merged);
    this.extra = extra;
    this.validate();
  }

  /** Reads `<dir>/config.json`. */
  static async fromPretrained(dir: string): Promise<PerceiverConfig> {
    if (typeof dir !== 'string' || dir === '') throw new InvalidArgumentError('dir', 'a checkpoint folder', dir);
    const file = join(dir, 'config.json');
    const json = (await readJsonObject(file))!;
    try {
      return new PerceiverConfig(json);
    } catch (error) {
      if (error instanceof ConfigError) throw new ConfigError(`${file}: ${error.message}`, { cause: error });
      throw error;
    }
  }

  get num_labels(): number {
    return Object.keys(this.id2label).length;
  }

  /** The config as transformers would write it back (config.json keys). */
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(DEFAULTS)) out[key] = (this as unknown as Record<string, unknown>)[key];
    return { ...out, ...this.extra };
  }

  private validate(): void {
    const self = this as unknown as Record<string, unknown>;
    for (const key of POSITIVE_INTS) {
      const v = self[key];
      if (!Number.isSafeInteger(v) || (v as number) < 1) throw new ConfigError(`${key} must be a positive integer, got ${shown(v)}`);
      // Bounds far above any real Perceiver, so a hostile config cannot make us build millions of
      // layers or size-2^50 tables before a weight is read.
      const max = key === 'num_blocks' || key === 'num_self_attends_per_block' ? MAX_LAYERS : MAX_DIM;
      if ((v as number) > max) throw new ConfigError(`${key} must be at most ${max}, got ${shown(v)}`);
    }
    for (const key of ['qk_channels', 'v_channels'] as const) {
      const v = this[key];
      if (v !== null && (!Number.isSafeInteger(v) || v < 1 || v > MAX_DIM)) throw new ConfigError(`${key} must be null or a positive integer up to ${MAX_DIM}, got ${shown(v)}`);
    }
    if (this.cross_attention_shape_for_attention !== 'kv' && this.cross_attention_shape_for_attention !== 'q') {
      throw new ConfigError(`cross_attention_shape_for_attention must be "kv" or "q", got ${shown(this.cross_attention_shape_for_attention)}`);
    }
    if (typeof this.use_query_residual !== 'boolean') throw new ConfigError('use_query_residual must be a boolean');
    if (typeof this.hidden_act !== 'string') throw new ConfigError('hidden_act must be a string');
    if (typeof this.layer_norm_eps !== 'number') throw new ConfigError('layer_norm_eps must be a number');
    for (const key of ['train_size', 'output_shape'] as const) {
      const v = this[key];
      if (!Array.isArray(v) || v.length > 8 || !v.every((d) => Number.isSafeInteger(d) && d > 0 && d <= MAX_DIM)) {
        throw new ConfigError(`${key} must be a short array of positive integers up to ${MAX_DIM}`);
      }
    }
    if (this.architectures !== null && (!Array.isArray(this.architectures) || !this.architectures.every((a) => typeof a === 'string'))) {
      throw new ConfigError('architectures must be an array of class names');
    }
    if (typeof this.id2label !== 'object' || this.id2label === null || Array.isArray(this.id2label)) {
      throw new ConfigError('id2label must be an object mapping class indices to names');
    }
    // Heads dividing the channels is PerceiverLayer's rule (lib/modeling/layers.ts), checked with the
    // widths each layer really gets (qk_channels / v_channels when set, not always d_latents), as
    // transformers does; it is not repeated here (CONTRIBUTING.md, "who checks what").
  }
}
