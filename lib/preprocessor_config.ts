/**
 * preprocessor_config.json, validated and bounded before anything is sized from it, as
 * PerceiverConfig does for config.json: every field the image processor uses has its type, range
 * and finiteness checked, and a bad one is a ConfigError naming the file and the field. The sizes
 * decide how much memory each image takes (a `size` of 30000 is 10.8 GB of float32 per image; a
 * `crop_size` of 1 with a `size` of 224 makes a crop box 224 times the image's short side), so they
 * are bounded far above any real Perceiver (224 and 256) but well below what would exhaust memory.
 */
import { ConfigError, describeValue } from './errors.js';
import type { ImageProcessorOptions, ImageSize, Resample } from './image_processor.js';
import { readJsonObject } from './io/read_json.js';

/** Largest `size` or `crop_size` side: 4096 x 4096 pixel_values are 201 MB of float32 per image. */
export const MAX_IMAGE_SIDE = 4096;
/**
 * Largest `size / crop_size` on either axis. The centre crop is `size / crop_size` times the
 * image's short side, zero-padded where it exceeds the image (transformers allows any ratio; real
 * checkpoints use 224 / 256). Up to 2 the crop box has at most 4 times the image's pixels.
 */
export const MAX_CROP_ZOOM = 2;

const SIZE_EXPECTED = `a positive integer up to ${MAX_IMAGE_SIDE} or {"height", "width"} of such integers`;

/** "`key` must be `expected`, got `value`" (`got` replaces the description of the value when given). */
function field(key: string, expected: string, value: unknown, got = describeValue(value)): ConfigError {
  return new ConfigError(`${key} must be ${expected}, got ${got}`);
}

function side(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 1 && (value as number) <= MAX_IMAGE_SIDE;
}

function imageSize(key: string, value: unknown): { height: number; width: number } {
  if (side(value)) return { height: value, width: value };
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const { height, width, ...rest } = value as Record<string, unknown>;
    if (side(height) && side(width) && Object.keys(rest).length === 0) return { height, width };
    // {"shortest_edge": n} and the like are other processors' sizes: Perceiver crops and resizes to a fixed box.
    const keys = Object.keys(value);
    if (!keys.includes('height') || !keys.includes('width') || keys.length !== 2) {
      throw field(key, SIZE_EXPECTED, value, `an object with keys ${JSON.stringify(keys).slice(0, 100)}`);
    }
    const [axis, bad] = side(height) ? ['width', width] : ['height', height];
    throw field(key, SIZE_EXPECTED, value, `${key}.${axis} = ${describeValue(bad)}`);
  }
  throw field(key, SIZE_EXPECTED, value);
}

function flag(key: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw field(key, 'true or false', value);
  return value;
}

/** A float32-finite number; `nonZero` also refuses values that are 0 in float32 (the processor divides by them there). */
function float32(key: string, value: unknown, nonZero: boolean): number {
  const ok = typeof value === 'number' && Number.isFinite(Math.fround(value)) && (!nonZero || Math.fround(value) !== 0);
  if (!ok) throw field(key, nonZero ? 'a finite, non-zero float32 number' : 'a finite float32 number', value);
  return value;
}

function triple(key: string, value: unknown, nonZero: boolean): [number, number, number] {
  if (typeof value === 'number') return [0, 1, 2].map(() => float32(key, value, nonZero)) as [number, number, number];
  if (!Array.isArray(value) || value.length !== 3) throw field(key, 'a number or an array of 3 numbers (one per RGB channel)', value);
  return value.map((v, i) => float32(`${key}[${i}]`, v, nonZero)) as [number, number, number];
}

/**
 * The image processor options a preprocessor_config.json object describes (transformers' keys:
 * `do_center_crop`, `crop_size`, `do_resize`, `size`, `resample`, `do_rescale`, `rescale_factor`,
 * `do_normalize`, `image_mean`, `image_std`; absent or null means the default). Other keys
 * (`image_processor_type`, `processor_class`, ...) are ignored. Throws ConfigError naming the field.
 */
export function parsePreprocessorConfig(json: Record<string, unknown>): ImageProcessorOptions {
  const given = (key: string): unknown => (json[key] === null ? undefined : json[key]);
  const options: ImageProcessorOptions = {};
  let doCenterCrop = true;
  if (given('do_center_crop') !== undefined) options.doCenterCrop = doCenterCrop = flag('do_center_crop', given('do_center_crop'));
  if (given('do_resize') !== undefined) options.doResize = flag('do_resize', given('do_resize'));
  if (given('do_rescale') !== undefined) options.doRescale = flag('do_rescale', given('do_rescale'));
  if (given('do_normalize') !== undefined) options.doNormalize = flag('do_normalize', given('do_normalize'));

  // The processor's own defaults, restated for the zoom check below.
  const size = given('size') === undefined ? { height: 224, width: 224 } : imageSize('size', given('size'));
  const crop = given('crop_size') === undefined ? { height: 256, width: 256 } : imageSize('crop_size', given('crop_size'));
  if (given('size') !== undefined) options.size = size satisfies ImageSize;
  if (given('crop_size') !== undefined) options.cropSize = crop satisfies ImageSize;
  if (doCenterCrop) {
    for (const axis of ['height', 'width'] as const) {
      if (size[axis] > crop[axis] * MAX_CROP_ZOOM) {
        throw new ConfigError(
          `crop_size.${axis} must be at least size.${axis} / ${MAX_CROP_ZOOM} (${size[axis] / MAX_CROP_ZOOM}), got ${crop[axis]}: ` +
            `the centre crop would be ${size[axis] / crop[axis]} times the image's short side`,
        );
      }
    }
  }

  const resample = given('resample');
  if (resample !== undefined) {
    if (resample !== 1 && resample !== 2 && resample !== 3) throw field('resample', '3 (bicubic), 2 (bilinear) or 1 (Lanczos, run as bicubic)', resample);
    options.resample = resample satisfies Resample;
  }
  const factor = given('rescale_factor');
  if (factor !== undefined) {
    // Pixels are multiplied by it in float32 after 0..255: a factor above 1 is no rescale any transformers processor writes.
    if (typeof factor !== 'number' || !(factor > 0 && factor <= 1) || Math.fround(factor) === 0) throw field('rescale_factor', 'a number in (0, 1] such as 1/255', factor);
    options.rescaleFactor = factor;
  }
  if (given('image_mean') !== undefined) options.imageMean = triple('image_mean', given('image_mean'), false);
  if (given('image_std') !== undefined) options.imageStd = triple('image_std', given('image_std'), true);
  return options;
}

/**
 * Reads and validates `file` (a preprocessor_config.json); undefined when it does not exist.
 * Every failure is a ConfigError that starts with the file's path.
 */
export async function readPreprocessorConfig(file: string): Promise<ImageProcessorOptions | undefined> {
  const json = await readJsonObject(file, true);
  if (json === undefined) return undefined;
  try {
    return parsePreprocessorConfig(json);
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(`${file}: ${error.message}`, { cause: error });
    throw error;
  }
}
