/**
 * The shape of the model description handed to the native engine (native/src/napi/spec_reader.cc
 * reads exactly this). Weights are referred to by their checkpoint names.
 */
export interface LinearSpec {
  weight: string;
  bias: string | null;
  in: number;
  out: number;
}

export interface LayerNormSpec {
  weight: string;
  bias: string;
  dim: number;
}

export interface PerceiverLayerSpec {
  isCrossAttention: boolean;
  numHeads: number;
  qkChannels: number;
  vChannels: number;
  qDim: number;
  kvDim: number;
  wideningFactor: number;
  useQueryResidual: boolean;
  layernorm1: LayerNormSpec;
  layernorm2: LayerNormSpec | null;
  query: LinearSpec;
  key: LinearSpec;
  value: LinearSpec;
  output: LinearSpec;
  layernorm: LayerNormSpec;
  mlpDense1: LinearSpec;
  mlpDense2: LinearSpec;
}

export interface TextPreprocessorSpec {
  type: 'text';
  embeddings: string;
  positionEmbeddings: string;
  vocabSize: number;
  maxPositionEmbeddings: number;
  dModel: number;
}

export type PreprocessorSpec = TextPreprocessorSpec;

export interface EncoderSpec {
  latents: string;
  numLatents: number;
  dLatents: number;
  numBlocks: number;
  crossAttention: PerceiverLayerSpec;
  selfAttends: PerceiverLayerSpec[];
}

export interface BasicDecoderSpec {
  type: 'basic';
  queryPositions: string;
  numQueries: number;
  queryChannels: number;
  crossAttention: PerceiverLayerSpec;
  finalLayer: LinearSpec | null;
  keepFirstPositionOnly: boolean;
}

export type DecoderSpec = BasicDecoderSpec;

export interface EmbeddingPostprocessorSpec {
  type: 'embedding';
  projection: LinearSpec;
}

export type PostprocessorSpec = EmbeddingPostprocessorSpec;

export interface ModelSpec {
  layerNormEps: number;
  preprocessor: PreprocessorSpec | null;
  encoder: EncoderSpec;
  decoder: DecoderSpec | null;
  postprocessor: PostprocessorSpec | null;
}
