/** perceiver-io: Perceiver IO models from Hugging Face checkpoints, on a native engine. */
export { PerceiverConfig, type PerceiverConfigFields } from './config.js';
export * from './errors.js';
export { Tensor, type DType, DTYPES, type AnyTypedArray } from './tensor.js';
export { PerceiverTokenizer } from './tokenizer.js';
export { AutoModel, ARCHITECTURES } from './auto.js';
export {
  PerceiverModel,
  type ForwardCall,
  type LoadOptions,
  type PerceiverModelOutput,
  type PerceiverModules,
  type ComputeDType,
} from './modeling/perceiver_model.js';
export { PerceiverForMaskedLM, PerceiverForSequenceClassification } from './modeling/heads.js';
export { PerceiverTextPreprocessor, type PerceiverPreprocessor } from './modeling/preprocessors.js';
export { PerceiverTrainablePositionEncoding } from './modeling/position_encodings.js';
export { PerceiverBasicDecoder, PerceiverClassificationDecoder, type PerceiverDecoder } from './modeling/decoders.js';
export { PerceiverEmbeddingDecoder, type PerceiverPostprocessor } from './modeling/postprocessors.js';
export { PerceiverLayer, PerceiverEncoder } from './modeling/layers.js';
export { WeightStore, RandomWeightStore } from './modeling/weights.js';
export { parseSafetensors, readSafetensors, serializeSafetensors, writeSafetensors } from './io/safetensors.js';
export { loadCheckpointWeights } from './io/checkpoint.js';
export { capabilities, type Capabilities } from './capabilities.js';
