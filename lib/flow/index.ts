/** Optical flow helpers: the model's patch input, tiling with blending, .flo files and the colour coding. */
export { FLOW_PATCH_CHANNELS, flowPatchInput, writeFramePatches, type RgbFrame } from './patches.js';
export { tileGrid, tileWeights, defaultMinOverlap, FlowBlender, DEFAULT_MIN_OVERLAP, type Tile, type TileShape } from './tiling.js';
export { encodeFlo, decodeFlo, readFlo, writeFlo, FLO_TAG, type FlowField } from './flo.js';
export { flowToColor, flowToColorAsync, maxFlowRadius, COLOR_WHEEL, type FlowToColorOptions } from './color.js';
