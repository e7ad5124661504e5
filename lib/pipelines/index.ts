/**
 * `pipeline(task, model, options)`: one call from a checkpoint folder or Hub id to a callable that
 * takes what users have (text, image files, videos) and returns what transformers.js's pipelines
 * return for the same task. See each task's file for its inputs and outputs.
 */
import { InvalidArgumentError } from '../errors.js';
import type { FlowField } from '../flow/flo.js';
import type { ImageInput } from '../image_processor.js';
import type { Tensor } from '../tensor.js';
import { loadForTask, makePipeline, type LabelScore, type Pipeline, type PipelineHandle, type PipelineOptions } from './common.js';
import { featureExtractionRunner, FEATURE_EXTRACTION_HEADS, type FeatureExtractionOptions, type FeatureInput } from './feature_extraction.js';
import { fillMaskRunner, FILL_MASK_HEADS, type FillMaskOptions, type FillMaskOutput } from './fill_mask.js';
import { imageClassificationRunner, imageProcessorFor, IMAGE_CLASSIFICATION_HEADS } from './image_classification.js';
import { opticalFlowRunner, OPTICAL_FLOW_HEADS, type OpticalFlowInput, type OpticalFlowOptions, type VideoFlow } from './optical_flow.js';
import { textClassificationRunner, TEXT_CLASSIFICATION_HEADS, type ClassificationOptions } from './text_classification.js';
import { videoAutoencodingRunner, VIDEO_AUTOENCODING_HEADS, type VideoAutoencodingOptions, type VideoAutoencodingOutput } from './video_autoencoding.js';

export interface PipelineTypes {
  'fill-mask': Pipeline<string, FillMaskOptions, FillMaskOutput>;
  'text-classification': Pipeline<string | string[], ClassificationOptions, LabelScore[] | LabelScore[][]>;
  'image-classification': Pipeline<ImageInput | ImageInput[], ClassificationOptions, LabelScore[] | LabelScore[][]>;
  'feature-extraction': Pipeline<FeatureInput | FeatureInput[], FeatureExtractionOptions, Tensor<'float32'>>;
  'optical-flow': OpticalFlowPipeline;
  'video-autoencoding': Pipeline<string, VideoAutoencodingOptions, VideoAutoencodingOutput>;
}

/** Two images give one field; a video gives one per frame pair. */
export interface OpticalFlowPipeline extends PipelineHandle {
  (input: [ImageInput, ImageInput], options?: OpticalFlowOptions): Promise<FlowField>;
  (input: { video: string }, options?: OpticalFlowOptions): Promise<VideoFlow>;
  (input: OpticalFlowInput, options?: OpticalFlowOptions): Promise<FlowField | VideoFlow>;
}

export type PipelineTask = keyof PipelineTypes;

export const PIPELINE_TASKS: readonly PipelineTask[] = Object.freeze([
  'fill-mask',
  'text-classification',
  'image-classification',
  'feature-extraction',
  'optical-flow',
  'video-autoencoding',
]);

const HEADS: Record<PipelineTask, readonly string[]> = {
  'fill-mask': FILL_MASK_HEADS,
  'text-classification': TEXT_CLASSIFICATION_HEADS,
  'image-classification': IMAGE_CLASSIFICATION_HEADS,
  'feature-extraction': FEATURE_EXTRACTION_HEADS,
  'optical-flow': OPTICAL_FLOW_HEADS,
  'video-autoencoding': VIDEO_AUTOENCODING_HEADS,
};

/** Loads a checkpoint (folder or Hub id) for a task; the result is called with inputs and disposed when done. */
export async function pipeline<T extends PipelineTask>(task: T, model: string, options: PipelineOptions = {}): Promise<PipelineTypes[T]> {
  if (typeof task !== 'string' || !(PIPELINE_TASKS as readonly string[]).includes(task)) {
    throw new InvalidArgumentError('task', `one of ${PIPELINE_TASKS.map((t) => `'${t}'`).join(', ')}`, task);
  }
  const loaded = await loadForTask(task, HEADS[task], model, options);
  const m = loaded.model;
  const make = <In, O extends object, Out>(run: (input: In, o: O, check: () => void) => Promise<Out>) =>
    makePipeline<In, O, Out>(task, loaded.folder, m, options.signal, run) as unknown as PipelineTypes[T];
  try {
    switch (task) {
      case 'fill-mask':
        return make(fillMaskRunner(m));
      case 'text-classification':
        return make(textClassificationRunner(m));
      case 'image-classification':
        return make(imageClassificationRunner(m, await imageProcessorFor(loaded.folder, m)));
      case 'feature-extraction': {
        const isImage = (IMAGE_CLASSIFICATION_HEADS as readonly string[]).includes(m.constructor.name);
        return make(featureExtractionRunner(m, isImage ? await imageProcessorFor(loaded.folder, m) : undefined));
      }
      case 'optical-flow':
        return make(opticalFlowRunner(m));
      default:
        return make(videoAutoencodingRunner(m));
    }
  } catch (error) {
    await m.dispose();
    throw error;
  }
}

export type { Pipeline, PipelineHandle, PipelineOptions, CallOptions, LabelScore } from './common.js';
export type { FillMaskOptions, FillMaskOutput, FillMaskCandidate, FillMaskSpan } from './fill_mask.js';
export type { ClassificationOptions } from './text_classification.js';
export type { FeatureExtractionOptions, FeatureInput } from './feature_extraction.js';
export type { OpticalFlowInput, OpticalFlowOptions, VideoFlow } from './optical_flow.js';
export type { VideoAutoencodingOptions, VideoAutoencodingOutput, AudioClip } from './video_autoencoding.js';
export { FLOW_SCALE_FACTOR } from './optical_flow.js';
export { writeFlowPicture, writeFlowVideo, writeAutoencoding, type AutoencodingFiles } from './write.js';
export { writePng, writeVideo, writeWav, encodeWav, stackRows, joinColumns, enlarge, VIDEO_OUTPUT_EXTENSIONS, type WriteVideoOptions } from './outputs.js';
