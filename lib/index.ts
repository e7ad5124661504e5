/** perceiver-io: Perceiver IO models from Hugging Face checkpoints, on a native engine. */
export { PerceiverConfig, type PerceiverConfigFields } from './config.js';
export * from './errors.js';
export { Tensor, type DType, DTYPES, type AnyTypedArray } from './tensor.js';
export { DeviceTensor } from './device_tensor.js';
export { PerceiverTokenizer } from './tokenizer.js';
export { DEFAULT_MAX_INPUT_PIXELS, ImageTooLargeError, PerceiverImageProcessor, type ImageInput, type ImageProcessorOptions, type PreprocessOptions, type RawImage } from './image_processor.js';
export { AutoModel, ARCHITECTURES } from './auto.js';
export {
  PerceiverModel,
  PerceiverEncoding,
  type EncodeCall,
  type EmbedOptions,
  type DecodeCall,
  type ForwardCall,
  type Logits,
  type DeviceLogits,
  type OutputTensor,
  type OutputPlacement,
  type OutputOptions,
  type LoadOptions,
  type PerceiverModelOutput,
  type PerceiverDecodeOutput,
  type PerceiverModules,
  type SubsampledOutputPoints,
  type ComputeDType,
  checkpointFolder,
} from './modeling/perceiver_model.js';
export {
  PerceiverForMaskedLM,
  PerceiverForSequenceClassification,
  PerceiverForImageClassificationLearned,
  PerceiverForImageClassificationFourier,
  PerceiverForImageClassificationConvProcessing,
  PerceiverForOpticalFlow,
  PerceiverForMultimodalAutoencoding,
} from './modeling/heads.js';
export {
  PerceiverTextPreprocessor,
  PerceiverImagePreprocessor,
  PerceiverAudioPreprocessor,
  PerceiverOneHotPreprocessor,
  PerceiverMultimodalPreprocessor,
  type PerceiverPreprocessor,
  type PreprocessorInputKind,
} from './modeling/preprocessors.js';
export { PerceiverTrainablePositionEncoding, PerceiverFourierPositionEncoding } from './modeling/position_encodings.js';
export {
  PerceiverBasicDecoder,
  PerceiverClassificationDecoder,
  PerceiverOpticalFlowDecoder,
  PerceiverBasicVideoAutoencodingDecoder,
  PerceiverMultimodalDecoder,
  PerceiverProjectionDecoder,
  type PerceiverDecoder,
} from './modeling/decoders.js';
export {
  PerceiverEmbeddingDecoder,
  PerceiverClassificationPostprocessor,
  PerceiverAudioPostprocessor,
  PerceiverProjectionPostprocessor,
  PerceiverMultimodalPostprocessor,
  type PerceiverPostprocessor,
} from './modeling/postprocessors.js';
export { PerceiverLayer, PerceiverEncoder } from './modeling/layers.js';
export { WeightStore, RandomWeightStore } from './modeling/weights.js';
export { parseSafetensors, readSafetensors, serializeSafetensors, writeSafetensors } from './io/safetensors.js';
export { loadCheckpointWeights } from './io/checkpoint.js';
export { capabilities, type Capabilities } from './capabilities.js';
export { HubError, isHubId, snapshotDownload, resolveModelPath, defaultHubCacheDir, type HubOptions, type HubProgressEvent } from './hub/download.js';
export {
  createBatcher,
  QueueFullError,
  CancelledError,
  type Batcher,
  type BatcherOptions,
  type BatchRequest,
  type BatchResult,
  type BatcherStats,
} from './serving/batcher.js';
export type { ServeOptions, RunningServer, ServedModel } from './serving/server.js';
export {
  mediaKindOf,
  MEDIA_EXTENSIONS,
  MEDIA_KINDS,
  decodeAudio,
  resampleAudio,
  decodeVideoFrames,
  decodeVideoAudio,
  probeMedia,
  videoDuration,
  createMediaInputBuilder,
  MULTIMODAL_FRAMES_PER_SECOND,
  type MediaKind,
  type DecodeAudioOptions,
  type DecodedAudio,
  type DecodeVideoFramesOptions,
  type DecodeVideoAudioOptions,
  type DecodedVideoFrames,
  type MediaProbe,
  type MediaToolOptions,
  type MediaInputBuilder,
  type MediaInputBuilderOptions,
  type PreparedItem,
} from './media/index.js';
export {
  discoverItems,
  readDoneIds,
  embedItemsToPart,
  runEmbedJob,
  readEmbeddings,
  modelIdentity,
  type ModelIdentity,
  itemId,
  inShard,
  type EmbedJobItem,
  type EmbedTask,
  type EmbedFailure,
  type EmbedPartOptions,
  type EmbedPartResult,
  type EmbedJobOptions,
  type EmbedJobResult,
  type EmbeddingRow,
  compactFolder,
  DEFAULT_PART_SIZE,
  type CompactionStep,
  type IdKind,
} from './batch/job.js';
export { searchIndex, indexMetadata, type SearchHit } from './batch/search.js';
export { useS3ForOutputs, partStore, type PartStore, type StoredObject } from './batch/store.js';
export { RemoteReader, type RemoteOptions } from './io/remote.js';
export {
  enqueueAndWait,
  startShardWorker,
  DEFAULT_SHARD_SIZE,
  type EnqueueOptions,
  type EnqueueProgress,
  type EnqueueResult,
  type ShardWorker,
  type ShardWorkerOptions,
} from './batch/queue.js';

/**
 * Starts the HTTP service (see lib/serving/server.ts). Loaded on first use, so importing the
 * library does not load fastify and prom-client.
 */
export async function serve(...args: Parameters<typeof import('./serving/server.js').serve>): ReturnType<typeof import('./serving/server.js').serve> {
  const { serve: start } = await import('./serving/server.js');
  return start(...args);
}
export {
  pipeline,
  PIPELINE_TASKS,
  FLOW_SCALE_FACTOR,
  writeFlowPicture,
  writeFlowVideo,
  writeAutoencoding,
  writePng,
  writeVideo,
  writeWav,
  encodeWav,
  type PipelineTask,
  type PipelineTypes,
  type Pipeline,
  type PipelineHandle,
  type OpticalFlowPipeline,
  type PipelineOptions,
  type CallOptions as PipelineCallOptions,
  type LabelScore,
  type FillMaskOptions,
  type FillMaskOutput,
  type FillMaskCandidate,
  type FillMaskSpan,
  type ClassificationOptions,
  type FeatureExtractionOptions,
  type FeatureInput,
  type OpticalFlowInput,
  type OpticalFlowOptions,
  type VideoFlow,
  type VideoAutoencodingOptions,
  type VideoAutoencodingOutput,
  type AudioClip,
  type AutoencodingFiles,
} from './pipelines/index.js';
export {
  flowPatchInput,
  tileGrid,
  tileWeights,
  defaultMinOverlap,
  FlowBlender,
  encodeFlo,
  decodeFlo,
  readFlo,
  writeFlo,
  flowToColor,
  flowToColorAsync,
  maxFlowRadius,
  COLOR_WHEEL,
  FLOW_PATCH_CHANNELS,
  type FlowField,
  type RgbFrame,
  type Tile,
  type TileShape,
} from './flow/index.js';
