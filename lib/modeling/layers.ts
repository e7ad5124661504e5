/**
 * transformers' PerceiverLayer (PerceiverAttention + PerceiverSelfOutput + PerceiverMLP), with the
 * same rules for defaulting channel counts, and the encoder built from it.
 */
import { ConfigError } from '../errors.js';
import type { PerceiverConfig } from '../config.js';
import { checkConfig, checkModuleOptions, flag, optionalSize, positiveSize } from './options.js';
import type { LayerNormSpec, LinearSpec, PerceiverLayerSpec, EncoderSpec } from './spec.js';
import type { WeightStore } from './weights.js';

export function linear(weights: WeightStore, prefix: string, inFeatures: number, outFeatures: number, bias = true): LinearSpec {
  return {
    weight: weights.take(`${prefix}.weight`, [outFeatures, inFeatures]),
    bias: bias ? weights.take(`${prefix}.bias`, [outFeatures]) : null,
    in: inFeatures,
    out: outFeatures,
  };
}

export function layerNorm(weights: WeightStore, prefix: string, dim: number): LayerNormSpec {
  return { weight: weights.take(`${prefix}.weight`, [dim]), bias: weights.take(`${prefix}.bias`, [dim]), dim };
}

export interface PerceiverLayerOptions {
  isCrossAttention?: boolean;
  qkChannels?: number | null;
  vChannels?: number | null;
  numHeads?: number;
  qDim: number;
  kvDim: number;
  wideningFactor?: number;
  useQueryResidual?: boolean;
}

export class PerceiverLayer {
  readonly isCrossAttention: boolean;
  readonly numHeads: number;
  readonly qkChannels: number;
  readonly vChannels: number;
  readonly qDim: number;
  readonly kvDim: number;
  readonly wideningFactor: number;
  readonly useQueryResidual: boolean;

  constructor(config: PerceiverConfig, options: PerceiverLayerOptions) {
    checkConfig(config);
    options = checkModuleOptions<PerceiverLayerOptions>(options, 'options', true) as PerceiverLayerOptions;
    this.isCrossAttention = flag(options.isCrossAttention, 'options.isCrossAttention', false);
    this.numHeads = positiveSize(options.numHeads, 'options.numHeads', 1);
    this.qDim = positiveSize(options.qDim, 'options.qDim');
    this.kvDim = positiveSize(options.kvDim, 'options.kvDim');
    this.wideningFactor = positiveSize(options.wideningFactor, 'options.wideningFactor', 4);
    this.useQueryResidual = flag(options.useQueryResidual, 'options.useQueryResidual', true);
    // As PerceiverAttention: a cross-attention without qk_channels takes the width of the side
    // config.cross_attention_shape_for_attention names; otherwise qk defaults to the query width.
    // v defaults to qk in both cases.
    let qk = optionalSize(options.qkChannels, 'options.qkChannels');
    if (this.isCrossAttention && qk === null) qk = config.cross_attention_shape_for_attention === 'q' ? this.qDim : this.kvDim;
    this.qkChannels = qk ?? this.qDim;
    this.vChannels = optionalSize(options.vChannels, 'options.vChannels') ?? this.qkChannels;
    if (this.qkChannels % this.numHeads !== 0) {
      throw new ConfigError(`qk_channels (${this.qkChannels}) must be divisible by num_heads (${this.numHeads})`);
    }
    if (this.vChannels % this.numHeads !== 0) {
      throw new ConfigError(`v_channels (${this.vChannels}) must be divisible by num_heads (${this.numHeads})`);
    }
  }

  /** Cross-attention projects back to the query width; self-attention to v_channels. */
  get outputChannels(): number {
    return this.isCrossAttention ? this.qDim : this.vChannels;
  }

  spec(weights: WeightStore, prefix: string): PerceiverLayerSpec {
    const attn = `${prefix}.attention.self`;
    return {
      isCrossAttention: this.isCrossAttention,
      numHeads: this.numHeads,
      // Per head, so the engine needs no divisibility rule of its own: the one is above.
      qkChannelsPerHead: this.qkChannels / this.numHeads,
      vChannelsPerHead: this.vChannels / this.numHeads,
      qDim: this.qDim,
      kvDim: this.kvDim,
      wideningFactor: this.wideningFactor,
      useQueryResidual: this.useQueryResidual,
      layernorm1: layerNorm(weights, `${attn}.layernorm1`, this.qDim),
      layernorm2: this.isCrossAttention ? layerNorm(weights, `${attn}.layernorm2`, this.kvDim) : null,
      query: linear(weights, `${attn}.query`, this.qDim, this.qkChannels),
      key: linear(weights, `${attn}.key`, this.kvDim, this.qkChannels),
      value: linear(weights, `${attn}.value`, this.kvDim, this.vChannels),
      output: linear(weights, `${prefix}.attention.output.dense`, this.vChannels, this.outputChannels),
      layernorm: layerNorm(weights, `${prefix}.layernorm`, this.qDim),
      mlpDense1: linear(weights, `${prefix}.mlp.dense1`, this.qDim, this.qDim * this.wideningFactor),
      mlpDense2: linear(weights, `${prefix}.mlp.dense2`, this.qDim * this.wideningFactor, this.qDim),
    };
  }
}

/** transformers' PerceiverEncoder: one cross-attention onto the inputs, then num_blocks passes of shared self-attention layers. */
export class PerceiverEncoder {
  readonly crossAttention: PerceiverLayer;
  readonly selfAttends: PerceiverLayer[];

  constructor(
    readonly config: PerceiverConfig,
    readonly kvDim: number,
  ) {
    checkConfig(config);
    positiveSize(kvDim, 'kvDim');
    this.crossAttention = new PerceiverLayer(config, {
      isCrossAttention: true,
      qkChannels: config.qk_channels,
      vChannels: config.v_channels,
      numHeads: config.num_cross_attention_heads,
      qDim: config.d_latents,
      kvDim,
      wideningFactor: config.cross_attention_widening_factor,
      useQueryResidual: config.use_query_residual,
    });
    this.selfAttends = Array.from(
      { length: config.num_self_attends_per_block },
      () =>
        new PerceiverLayer(config, {
          qkChannels: config.qk_channels,
          vChannels: config.v_channels,
          numHeads: config.num_self_attention_heads,
          qDim: config.d_latents,
          kvDim: config.d_latents,
          wideningFactor: config.self_attention_widening_factor,
        }),
    );
  }

  spec(weights: WeightStore, prefix: string, latents: string): EncoderSpec {
    const c = this.config;
    return {
      latents,
      numLatents: c.num_latents,
      dLatents: c.d_latents,
      numBlocks: c.num_blocks,
      crossAttention: this.crossAttention.spec(weights, `${prefix}.cross_attention`),
      selfAttends: this.selfAttends.map((layer, i) => layer.spec(weights, `${prefix}.self_attends.${i}`)),
    };
  }
}
