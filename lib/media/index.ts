/**
 * The media layer: text, image, audio and video files decoded into model inputs. Nothing here
 * loads a heavy dependency at import time: audio-decode and sharp are imported on first use, and
 * ffmpeg / ffprobe are separate programs spawned when a video is read.
 */
export { MEDIA_EXTENSIONS, MEDIA_KINDS, mediaKindOf, type MediaKind } from './kinds.js';
export { decodeAudio, resampleAudio, resampledLength, type DecodeAudioOptions, type DecodedAudio } from './audio.js';
export {
  decodeVideoFrames,
  decodeVideoAudio,
  probeMedia,
  videoDuration,
  ALLOWED_DEMUXERS,
  type DecodeVideoFramesOptions,
  type DecodeVideoAudioOptions,
  type DecodedVideoFrames,
  type MediaProbe,
  type MediaToolOptions,
  type VideoStreamInfo,
  type AudioStreamInfo,
} from './video.js';
export {
  createMediaInputBuilder,
  MULTIMODAL_FRAMES_PER_SECOND,
  type MediaInputBuilder,
  type MediaInputBuilderOptions,
  type PreparedItem,
} from './model_inputs.js';
