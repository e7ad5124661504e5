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

export interface FourierSpec {
  numBands: number;
  maxResolution: number[];
  concatPos: boolean;
  sineOnly: boolean;
}

export type PositionSpec =
  | { type: 'trainable'; weight: string; numPositions: number; numChannels: number; projection: LinearSpec | null }
  | ({ type: 'fourier'; projection: LinearSpec | null } & FourierSpec);

export type PreprocessorSpec =
  | { type: 'text'; embeddings: string; positionEmbeddings: string; vocabSize: number; maxPositionEmbeddings: number; dModel: number }
  | {
      type: 'image';
      prepType: 'conv1x1' | 'conv' | 'pixels' | 'patches';
      inChannels: number;
      outChannels: number;
      spatialDownsample: number;
      temporalDownsample: number;
      conv: LinearSpec | null;
      batchnorm: { weight: string; bias: string; runningMean: string; runningVar: string; eps: number } | null;
      convAfterPatching: LinearSpec | null;
      position: PositionSpec;
      concatOrAdd: 'concat' | 'add';
      numChannels: number;
    }
  | { type: 'audio'; samplesPerPatch: number; position: PositionSpec; concatOrAdd: 'concat' | 'add'; numChannels: number }
  | { type: 'onehot'; numLabels: number }
  | { type: 'none'; numChannels: number }
  | {
      type: 'multimodal';
      numChannels: number;
      modalities: { name: string; preprocessor: PreprocessorSpec; padding: string | null; mask: string | null; maskProbability: number }[];
    };

export interface EncoderSpec {
  latents: string;
  numLatents: number;
  dLatents: number;
  numBlocks: number;
  crossAttention: PerceiverLayerSpec;
  selfAttends: PerceiverLayerSpec[];
}

export type QuerySpec =
  | { type: 'trainable'; weight: string; numPositions: number; numChannels: number }
  | ({ type: 'fourier'; outputIndexDims: number[] } & FourierSpec)
  | { type: 'inputs' };

export type DecoderSpec =
  | {
      type: 'basic';
      queries: QuerySpec;
      crossAttention: PerceiverLayerSpec;
      finalLayer: LinearSpec | null;
      output: 'sequence' | 'first' | 'flow' | 'video';
      rescaleFactor?: number;
      outputShape?: number[];
    }
  | {
      type: 'multimodal';
      queryChannels: number;
      crossAttention: PerceiverLayerSpec;
      finalLayer: LinearSpec | null;
      modalities: { name: string; queries: QuerySpec; padding: string | null }[];
    }
  | { type: 'projection'; classifier: LinearSpec };

export type PostprocessorSpec =
  | { type: 'linear' | 'first' | 'audio'; projection: LinearSpec }
  | { type: 'multimodal'; modalities: { name: string; postprocessor: PostprocessorSpec }[] };

export interface ModelSpec {
  layerNormEps: number;
  preprocessor: PreprocessorSpec;
  encoder: EncoderSpec;
  decoder: DecoderSpec | null;
  postprocessor: PostprocessorSpec | null;
}
