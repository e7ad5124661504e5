/**
 * The media layer on real files: audio written by ffmpeg (WAV, FLAC, MP3) decoded and resampled,
 * videos written by ffmpeg decoded to frames and audio, images written by sharp, corrupt and
 * missing files, and the media input builder feeding model.embed on the fixture models, checked
 * against the same call made by hand from the decoded tensors.
 */
import t, { type Test } from 'tap';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AutoModel,
  BackendUnavailableError,
  InvalidArgumentError,
  MediaDecodeError,
  PerceiverConfig,
  PerceiverImageProcessor,
  PerceiverModel,
  PerceiverTokenizer,
  Tensor,
  createMediaInputBuilder,
  decodeAudio,
  decodeVideoAudio,
  decodeVideoFrames,
  mediaKindOf,
  probeMedia,
  resampleAudio,
  videoDuration,
} from '../lib/index.js';
import { fixtureDir, relativeError, tempDir } from './helpers/fixtures.js';
import { peak, rms, sineFrequency, writeGradientImage, writeSolidImage, writeTone, writeVideo } from './helpers/media.js';

const dir = await tempDir(t, 'perceiver-media-');
const file = (name: string) => join(dir, name);

// Two seconds of 25 fps video, red then blue, with a 100 Hz tone at 48 kHz (100 Hz stays below the
// Nyquist frequency of the multimodal fixture's 800 Hz audio).
const TWO_COLOURS = file('red-blue.mp4');
const SILENT_VIDEO = file('silent.mp4');
const CROPPED_VIDEO = file('green-red-blue.mp4');
await Promise.all([
  writeVideo(TWO_COLOURS, { colours: ['red', 'blue'], secondsEach: 1, width: 64, height: 48, fps: 25, audio: { expression: '0.5*sin(2*PI*100*t)', sampleRate: 48000 } }),
  writeVideo(SILENT_VIDEO, { colours: ['0x3366CC'], secondsEach: 0.6, width: 32, height: 32, fps: 25 }),
  // 64x32: green with a red band at x 16..31 and a blue band at x 32..47 (the centre square).
  writeVideo(CROPPED_VIDEO, {
    colours: ['green'],
    secondsEach: 0.4,
    width: 64,
    height: 32,
    fps: 25,
    filters: ['drawbox=x=16:y=0:w=16:h=32:color=red:t=fill', 'drawbox=x=32:y=0:w=16:h=32:color=blue:t=fill'],
  }),
  writeTone(file('a440.wav'), { channels: ['0.5*sin(2*PI*440*t)'], sampleRate: 44100, seconds: 1 }),
  writeTone(file('opposite.wav'), { channels: ['0.5*sin(2*PI*440*t)', '-0.5*sin(2*PI*440*t)'], sampleRate: 44100, seconds: 1 }),
  writeTone(file('a440.flac'), { channels: ['0.5*sin(2*PI*440*t)'], sampleRate: 48000, seconds: 1 }),
  writeTone(file('a440.mp3'), { channels: ['0.5*sin(2*PI*440*t)'], sampleRate: 44100, seconds: 1 }),
  writeTone(file('hum100.wav'), { channels: ['0.5*sin(2*PI*100*t)'], sampleRate: 16000, seconds: 0.5 }),
  writeSolidImage(file('orange.png'), 40, 30, [255, 128, 0]),
  writeGradientImage(file('gradient.jpg'), 48, 36),
]);
// Corrupt and odd files.
await writeFile(file('noise.wav'), Buffer.from(Array.from({ length: 4000 }, (_, i) => (i * 7919 + 13) % 251)));
await writeFile(file('noise.png'), Buffer.from(Array.from({ length: 4000 }, (_, i) => (i * 31 + 7) % 256)));
await writeFile(file('noise.mp4'), Buffer.from(Array.from({ length: 4000 }, (_, i) => (i * 17 + 3) % 256)));
await writeFile(file('truncated.flac'), (await readFile(file('a440.flac'))).subarray(0, 2000));
await writeFile(file('truncated.mp4'), (await readFile(TWO_COLOURS)).subarray(0, 3000));
await writeFile(file('latin1.txt'), Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20, 0xff, 0x0a]));
await mkdir(file('folder.wav'));

/** The mean RGB of frame f of [frames, 3, H, W] pixels over columns [x0, x1). */
function meanColour(pixels: Tensor, f: number, x0?: number, x1?: number): [number, number, number] {
  const [, , h, w] = pixels.shape as [number, number, number, number];
  const from = x0 ?? 0;
  const to = x1 ?? w;
  const out: [number, number, number] = [0, 0, 0];
  for (let c = 0; c < 3; c++) {
    let sum = 0;
    for (let y = 0; y < h; y++) for (let x = from; x < to; x++) sum += pixels.get(((f * 3 + c) * h + y) * w + x);
    out[c] = Math.round((255 * sum) / (h * (to - from)));
  }
  return out;
}

function near(t: Test, actual: number[], expected: number[], tolerance: number, what: string): void {
  t.ok(actual.every((v, i) => Math.abs(v - expected[i]!) <= tolerance), `${what}: [${actual}] within ${tolerance} of [${expected}]`);
}

t.test('mediaKindOf sorts files by extension', async (t) => {
  t.equal(mediaKindOf('notes/readme.md'), 'text');
  t.equal(mediaKindOf('a.TXT'), 'text');
  t.equal(mediaKindOf('/x/cat.JPEG'), 'image');
  t.equal(mediaKindOf('clip.webp'), 'image');
  t.equal(mediaKindOf('song.flac'), 'audio');
  t.equal(mediaKindOf('voice.ogg'), 'audio');
  t.equal(mediaKindOf('movie.mkv'), 'video');
  t.equal(mediaKindOf('movie.webm'), 'video');
  t.equal(mediaKindOf('archive.zip'), undefined);
  t.equal(mediaKindOf('Makefile'), undefined);
  t.equal(mediaKindOf('.png'), undefined, 'a dot file has no extension');
});

t.test('resampleAudio keeps a sine\'s frequency and amplitude and removes what the new rate cannot hold', async (t) => {
  const sine = (freq: number, rate: number, n: number, amplitude: number) => Float32Array.from({ length: n }, (_, i) => amplitude * Math.sin((2 * Math.PI * freq * i) / rate));
  // Down 48 kHz -> 44.1 kHz, up 8 kHz -> 22.05 kHz, down 44.1 kHz -> 16 kHz: compared sample by
  // sample with the sine sampled directly at the new rate, away from the ends.
  for (const [freq, from, to] of [
    [1000, 48000, 44100],
    [1500, 8000, 22050],
    [440, 44100, 16000],
  ] as const) {
    const out = resampleAudio(sine(freq, from, from, 0.8), from, to);
    t.equal(out.length, to, `${from} -> ${to}: one second stays one second`);
    const expected = sine(freq, to, to, 0.8);
    let maxError = 0;
    for (let i = 200; i < to - 200; i++) maxError = Math.max(maxError, Math.abs(out[i]! - expected[i]!));
    t.ok(maxError < 2e-3, `${freq} Hz ${from} -> ${to}: max error ${maxError.toExponential(2)} against the sine at the new rate`);
    t.ok(Math.abs(sineFrequency(out, to, 200, to - 200) - freq) < 2, `${freq} Hz kept`);
    t.ok(Math.abs(peak(out, 200, to - 200) - 0.8) < 2e-3, 'amplitude kept');
  }
  // 10 kHz cannot be held at 16 kHz (Nyquist 8 kHz): filtered out, not folded to 6 kHz.
  const aliased = resampleAudio(sine(10000, 48000, 48000, 0.8), 48000, 16000);
  const residue = peak(aliased, 500, 15500);
  t.ok(residue < 0.8e-3, `10 kHz into 16 kHz: residue ${residue.toExponential(2)} (more than 60 dB down)`);
  t.same(Array.from(resampleAudio(Float32Array.of(1, 2, 3), 16000, 16000)), [1, 2, 3], 'same rate: a copy');
  t.throws(() => resampleAudio(Float32Array.of(1), 0, 16000), InvalidArgumentError);
});

t.test('decodeAudio decodes WAV, FLAC and MP3, downmixes and resamples', async (t) => {
  const wav = await decodeAudio(file('a440.wav'), { sampleRate: 16000 });
  t.equal(wav.sampleRate, 16000);
  t.equal(wav.channels, 1);
  t.equal(wav.samples.length, 16000, '1 s at 16 kHz');
  t.equal(wav.durationSeconds, 1);
  t.ok(Math.abs(sineFrequency(wav.samples, 16000, 400, 15600) - 440) < 2, '440 Hz by zero crossings');
  t.ok(Math.abs(peak(wav.samples, 400, 15600) - 0.5) < 5e-3, 'amplitude 0.5 (16-bit PCM)');

  const native = await decodeAudio(file('a440.wav'));
  t.equal(native.sampleRate, 44100, 'no sampleRate: the file\'s own');
  t.equal(native.samples.length, 44100);

  const fromBytes = await decodeAudio(new Uint8Array(await readFile(file('a440.wav'))), { sampleRate: 16000 });
  t.same(fromBytes.samples, wav.samples, 'the bytes of the file decode as the file');

  const opposite = await decodeAudio(file('opposite.wav'), { sampleRate: 22050 });
  t.ok(peak(opposite.samples) < 1e-3, 'mono is the mean of the channels: opposite channels cancel');
  const stereo = await decodeAudio(file('opposite.wav'), { sampleRate: 22050, channels: 2 });
  t.equal(stereo.samples.length, 2 * 22050, 'two channels interleaved');
  t.ok(Math.abs(sineFrequency(stereo.samples, 22050, 500, 21500, 0, 2) - 440) < 2, 'left: 440 Hz');
  let antiphase = 0;
  for (let i = 0; i < 22050; i++) antiphase = Math.max(antiphase, Math.abs(stereo.samples[2 * i]! + stereo.samples[2 * i + 1]!));
  t.ok(antiphase < 1e-3 && peak(stereo.samples) > 0.45, 'right is minus left, frame by frame');
  const upmixed = await decodeAudio(file('a440.wav'), { sampleRate: 8000, channels: 2 });
  t.same(upmixed.samples.filter((_, i) => i % 2 === 0), upmixed.samples.filter((_, i) => i % 2 === 1), 'mono to 2 channels: copied');

  const flac = await decodeAudio(file('a440.flac'), { sampleRate: 16000 });
  t.equal(flac.samples.length, 16000, 'FLAC: 1 s from 48 kHz');
  t.ok(Math.abs(sineFrequency(flac.samples, 16000, 400, 15600) - 440) < 2, 'FLAC: 440 Hz');
  t.ok(Math.abs(peak(flac.samples, 400, 15600) - 0.5) < 5e-3, 'FLAC: amplitude');

  const mp3 = await decodeAudio(file('a440.mp3'), { sampleRate: 16000 });
  t.ok(Math.abs(mp3.durationSeconds - 1) < 0.1, `MP3: about 1 s (${mp3.durationSeconds} s with the encoder's padding)`);
  t.ok(Math.abs(sineFrequency(mp3.samples, 16000, 2000, 14000) - 440) < 3, 'MP3: 440 Hz');
  t.ok(Math.abs(peak(mp3.samples, 2000, 14000) - 0.5) < 0.05, 'MP3: amplitude');
});

t.test('decodeAudio: missing, corrupt, truncated and oversized files are MediaDecodeError', async (t) => {
  const expectDecodeError = async (source: string | Uint8Array, pattern: RegExp, options = {}) => {
    const error = await decodeAudio(source, options).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(error instanceof MediaDecodeError, `${typeof source === 'string' ? source : 'bytes'}: MediaDecodeError`);
    t.match((error as Error).message, pattern);
    if (typeof source === 'string') t.equal((error as MediaDecodeError).file, source, 'names the file');
  };
  await expectDecodeError(file('missing.wav'), /no such file/);
  await expectDecodeError(file('noise.wav'), /not a recognised audio format/);
  await expectDecodeError(file('truncated.flac'), /no audio samples/);
  await expectDecodeError(file('folder.wav'), /directory/);
  await expectDecodeError(file('a440.wav'), /more than the limit of 1000/, { maxBytes: 1000 });
  await expectDecodeError(file('a440.wav'), /more than the limit of 1000 /, { maxSamples: 1000 });
  await expectDecodeError(new Uint8Array(0), /no bytes/);
  await t.rejects(decodeAudio(file('a440.wav'), { sampleRate: 0 }), InvalidArgumentError);
  await t.rejects(decodeAudio(file('a440.wav'), { channels: 1.5 }), InvalidArgumentError);
  await t.rejects(decodeAudio(42 as never), InvalidArgumentError);
});

t.test('decodeVideoFrames samples frames evenly, or consecutively at a rate, scaled and cropped', async (t) => {
  const probe = await probeMedia(TWO_COLOURS);
  t.same([probe.video?.width, probe.video?.height, probe.video?.frameRate], [64, 48, 25], 'probe: size and rate');
  t.equal(probe.audio?.sampleRate, 48000, 'probe: audio track');
  t.ok(Math.abs(probe.durationSeconds - 2) < 0.05, 'probe: 2 s');

  const even = await decodeVideoFrames(TWO_COLOURS, { frames: 4, width: 8, height: 8 });
  t.same(even.pixels.shape, [4, 3, 8, 8], '[frames, 3, height, width]');
  t.equal(even.rgb.length, 4 * 8 * 8 * 3);
  t.ok(even.timestamps.every((ts, i) => Math.abs(ts - [0.25, 0.75, 1.25, 1.75][i]!) < 0.01), `frames at the middle of four equal spans: ${even.timestamps}`);
  near(t, meanColour(even.pixels, 0), [255, 0, 0], 4, 'frame 0 red');
  near(t, meanColour(even.pixels, 1), [255, 0, 0], 4, 'frame 1 red');
  near(t, meanColour(even.pixels, 2), [0, 0, 255], 4, 'frame 2 blue');
  near(t, meanColour(even.pixels, 3), [0, 0, 255], 4, 'frame 3 blue');
  let planar = 0;
  for (let p = 0; p < 64; p++) for (let c = 0; c < 3; c++) planar = Math.max(planar, Math.abs(even.pixels.get(c * 64 + p) - Math.fround(even.rgb[p * 3 + c]! / 255)));
  t.equal(planar, 0, 'pixels are the 8-bit RGB / 255, channel planes first');

  const own = await decodeVideoFrames(TWO_COLOURS, { frames: 1 });
  t.same([own.width, own.height, own.pixels.shape], [64, 48, [1, 3, 48, 64]], 'no size: the video\'s own');

  // Consecutive frames at 25 fps from 0.9 s: red up to 1 s, then blue.
  const clip = await decodeVideoFrames(TWO_COLOURS, { frames: 6, width: 4, height: 4, fps: 25, start: 0.9 });
  const reds = Array.from({ length: 6 }, (_, f) => meanColour(clip.pixels, f)[0]! > 128);
  t.ok(reds[0] && !reds[5] && reds.indexOf(false) >= 2 && reds.indexOf(false) <= 3 && reds.slice(reds.indexOf(false)).every((r) => !r), `red then blue around 1 s: ${reds}`);
  t.ok(clip.timestamps.every((ts, i) => Math.abs(ts - (0.9 + i / 25)) < 1e-9), 'timestamps step by 1/25 s');
  const pastEnd = await decodeVideoFrames(TWO_COLOURS, { frames: 10, width: 4, height: 4, fps: 25, start: 1.9 });
  t.same(pastEnd.pixels.shape, [10, 3, 4, 4], 'a clip running past the end is still 10 frames');
  t.ok(pastEnd.timestamps[9]! < 2 && pastEnd.timestamps[9] === pastEnd.timestamps[8], 'its last frame held');

  // Cover: scaled to 16x8 and the centre 8x8 cropped, which is the red and blue bands only.
  const cover = await decodeVideoFrames(CROPPED_VIDEO, { frames: 1, width: 8, height: 8 });
  // (Colours blur a little at the band edges: 4:2:0 chroma and the bicubic downscale.)
  const [coverLeft, coverRight] = [meanColour(cover.pixels, 0, 0, 4), meanColour(cover.pixels, 0, 4, 8)];
  t.ok(coverLeft[0]! > 200 && coverLeft[1]! < 40 && coverLeft[2]! < 40, `cover: left half of the crop red [${coverLeft}]`);
  t.ok(coverRight[2]! > 200 && coverRight[0]! < 40 && coverRight[1]! < 40, `cover: right half of the crop blue [${coverRight}]`);
  const stretch = await decodeVideoFrames(CROPPED_VIDEO, { frames: 1, width: 8, height: 8, fit: 'stretch' });
  const stretchEdge = meanColour(stretch.pixels, 0, 0, 1);
  t.ok(stretchEdge[1]! > 90 && stretchEdge[0]! < 40 && stretchEdge[2]! < 40, `stretch: the green edge kept [${stretchEdge}]`);

  await t.rejects(decodeVideoFrames(TWO_COLOURS, { frames: 0 }), InvalidArgumentError);
  await t.rejects(decodeVideoFrames(TWO_COLOURS, { frames: 1, width: 8 }), InvalidArgumentError, 'width without height');
  await t.rejects(decodeVideoFrames(TWO_COLOURS, { frames: 1, start: 1 }), InvalidArgumentError, 'start without fps');
  await t.rejects(decodeVideoFrames(TWO_COLOURS, { frames: 16, maxBytes: 64 * 48 * 3 }), MediaDecodeError, 'more frame bytes than maxBytes');
});

t.test('decodeVideoAudio decodes the audio track at the rate asked', async (t) => {
  const whole = await decodeVideoAudio(TWO_COLOURS, { sampleRate: 16000 });
  t.equal(whole.channels, 1);
  t.ok(Math.abs(whole.samples.length - 32000) < 400, `about 2 s at 16 kHz (${whole.samples.length})`);
  t.ok(Math.abs(sineFrequency(whole.samples, 16000, 2000, 30000) - 100) < 1, '100 Hz');
  t.ok(Math.abs(rms(whole.samples, 2000, 30000) - 0.5 / Math.SQRT2) < 0.01, 'amplitude 0.5 (by RMS: AAC overshoots its peaks)');
  const span = await decodeVideoAudio(TWO_COLOURS, { sampleRate: 8000, start: 0.5, durationSeconds: 1 });
  t.ok(Math.abs(span.samples.length - 8000) <= 16, `start 0.5 s for 1 s: ${span.samples.length} samples`);
  const stereo = await decodeVideoAudio(TWO_COLOURS, { sampleRate: 8000, channels: 2, durationSeconds: 0.5 });
  t.ok(Math.abs(stereo.samples.length - 8000) <= 32, 'two channels interleaved');

  await t.rejects(decodeVideoAudio(SILENT_VIDEO, { sampleRate: 16000 }), MediaDecodeError, 'no audio track');
  await t.rejects(decodeVideoAudio(TWO_COLOURS, { sampleRate: 16000, maxSamples: 1000 }), MediaDecodeError, 'longer than maxSamples');
  await t.rejects(decodeVideoAudio(TWO_COLOURS, { sampleRate: -1 }), InvalidArgumentError);
});

t.test('video: missing, corrupt and truncated files are MediaDecodeError; a missing ffmpeg says to install it', async (t) => {
  for (const name of ['missing.mp4', 'noise.mp4', 'truncated.mp4']) {
    const error = await decodeVideoFrames(file(name), { frames: 2 }).catch((e: unknown) => e);
    t.ok(error instanceof MediaDecodeError, `${name}: MediaDecodeError`);
    t.equal((error as MediaDecodeError).file, file(name));
    t.ok((error as Error).message.includes(file(name)), `the message names the file: ${(error as Error).message}`);
  }
  await t.rejects(decodeVideoAudio(file('noise.mp4'), { sampleRate: 16000 }), MediaDecodeError);
  // A playlist named .mp4 would have ffmpeg open the files it lists: refused (not a known container).
  await writeFile(file('playlist.mp4'), `#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n${TWO_COLOURS}\n#EXT-X-ENDLIST\n`);
  await t.rejects(decodeVideoFrames(file('playlist.mp4'), { frames: 1 }), MediaDecodeError, 'a playlist is not opened');
  const missingTool = await decodeVideoFrames(TWO_COLOURS, { frames: 1, ffprobePath: join(dir, 'no-ffprobe') }).catch((e: unknown) => e);
  t.ok(missingTool instanceof BackendUnavailableError, 'no ffprobe: BackendUnavailableError');
  t.match((missingTool as Error).message, /apt-get install ffmpeg/);
  const missingFfmpeg = await decodeVideoFrames(TWO_COLOURS, { frames: 1, ffmpegPath: join(dir, 'no-ffmpeg') }).catch((e: unknown) => e);
  t.ok(missingFfmpeg instanceof BackendUnavailableError, 'no ffmpeg: BackendUnavailableError');
  t.match((missingFfmpeg as Error).message, /ffmpeg was not found.*apt-get install ffmpeg/);
});

t.test('text models: .txt and .md files tokenized, truncated, padded with a mask; embed as by hand', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('text-classification'));
  t.teardown(() => model.dispose());
  const builder = createMediaInputBuilder(model);
  t.same(builder.accepts, ['text']);
  const texts = ['A short note.', 'Ünïcödé text, and a sentence long enough to be cut at the model\'s 48 positions.', '# Title\n\nmarkdown [MASK] body'];
  const names = ['short.txt', 'long.txt', 'doc.md'];
  await Promise.all(names.map((n, i) => writeFile(file(n), texts[i]!)));
  const items = await Promise.all(names.map((n) => builder.load(file(n))));
  t.same(items.map((i) => i.kind), ['text', 'text', 'text']);
  const call = builder.collate(items);

  const byHand = new PerceiverTokenizer().call(texts, { padding: 'longest', truncation: true, maxLength: model.config.max_position_embeddings });
  t.same((call.inputs as Tensor).shape, byHand.inputIds.shape, 'padded to the longest, which is truncated to max_position_embeddings');
  t.same(Array.from((call.inputs as Tensor).data as BigInt64Array), Array.from(byHand.inputIds.data), 'the tokenizer\'s ids');
  t.same(Array.from(call.attentionMask!.data as BigInt64Array), Array.from(byHand.attentionMask.data), 'the tokenizer\'s mask');
  const embedded = await model.embed(call.inputs, { attentionMask: call.attentionMask });
  const expected = await model.embed(byHand.inputIds, { attentionMask: byHand.attentionMask });
  t.equal(relativeError(embedded, expected), 0, 'embed as by hand');
  const alone = builder.collate([items[0]!]);
  const single = await model.embed(alone.inputs, { attentionMask: alone.attentionMask });
  const row = new Tensor('float32', single.shape, embedded.toFloat32().slice(0, single.size));
  t.ok(relativeError(row, single) < 1e-5, 'padding is masked out: an item alone embeds as in the batch');

  await t.rejects(builder.load(file('latin1.txt')), MediaDecodeError, 'not UTF-8');
  await t.rejects(builder.load(file('missing.txt')), MediaDecodeError, 'missing');
  const wrongKind = await builder.load(file('orange.png')).catch((e: unknown) => e);
  t.ok(wrongKind instanceof InvalidArgumentError, 'an image for a text model: InvalidArgumentError');
  t.match((wrongKind as Error).message, /accepts text/);
  await t.rejects(builder.load(file('data.xyz')), InvalidArgumentError, 'unknown extension');
  t.throws(() => builder.collate([]), InvalidArgumentError);
});

t.test('image classifiers: images and a video\'s middle frame through the image processor; embed as by hand', async (t) => {
  const middle = await decodeVideoFrames(TWO_COLOURS, { frames: 1 });
  for (const name of ['image-learned', 'image-fourier', 'image-conv']) {
    const model = await AutoModel.fromPretrained(fixtureDir(name));
    t.teardown(() => model.dispose());
    const builder = createMediaInputBuilder(model);
    t.same([...builder.accepts].sort(), ['image', 'video'], `${name}: accepts`);
    const items = [await builder.load(file('orange.png')), await builder.load(file('gradient.jpg')), await builder.load(TWO_COLOURS)];
    t.same(items.map((i) => i.kind), ['image', 'image', 'video']);
    const call = builder.collate(items);
    const size = model.config.image_size;
    t.same((call.inputs as Tensor).shape, [3, 3, size, size], `${name}: [3, 3, ${size}, ${size}]`);
    const processor = new PerceiverImageProcessor({ size, cropSize: Math.max(size, Math.round((size * 256) / 224)) });
    const byHand = await processor.preprocess([file('orange.png'), file('gradient.jpg'), { data: middle.rgb, width: middle.width, height: middle.height, channels: 3 }]);
    t.equal(relativeError(call.inputs as Tensor, byHand), 0, `${name}: the processor's pixels`);
    const embedded = await model.embed(call.inputs);
    t.same(embedded.shape, [3, model.config.d_latents]);
    t.equal(relativeError(embedded, await model.embed(byHand)), 0, `${name}: embed as by hand`);
  }
  const model = await AutoModel.fromPretrained(fixtureDir('image-fourier'));
  t.teardown(() => model.dispose());
  const processor = new PerceiverImageProcessor({ size: 16, doCenterCrop: false });
  const custom = createMediaInputBuilder(model, { imageProcessor: processor });
  const item = await custom.load(file('gradient.jpg'));
  t.equal(relativeError(item.inputs as Tensor, await processor.preprocess(file('gradient.jpg'))), 0, 'options.imageProcessor is used');
  await t.rejects(custom.load(file('noise.png')), MediaDecodeError, 'corrupt image');
  await t.rejects(custom.load(file('noise.mp4')), MediaDecodeError, 'corrupt video');
  await t.rejects(custom.load(file('a440.wav')), InvalidArgumentError, 'audio for an image model');
});

t.test('multimodal autoencoding: video, audio and image files as one clip each; embed as by hand', async (t) => {
  const model = await AutoModel.fromPretrained(fixtureDir('multimodal-autoencoding'));
  t.teardown(() => model.dispose());
  const c = model.config;
  const builder = createMediaInputBuilder(model);
  t.same([...builder.accepts].sort(), ['audio', 'image', 'video']);
  const items = [await builder.load(TWO_COLOURS), await builder.load(file('hum100.wav')), await builder.load(file('orange.png')), await builder.load(SILENT_VIDEO)];
  const call = builder.collate(items);
  const inputs = call.inputs as Record<string, Tensor>;
  const frames = c.num_frames;
  const size = c.image_size;
  const samples = c.num_frames * c.audio_samples_per_frame;
  const rate = 25 * c.audio_samples_per_frame;
  t.same(inputs.image!.shape, [4, frames, 3, size, size]);
  t.same(inputs.audio!.shape, [4, samples, 1]);
  t.same(inputs.label!.shape, [4, c.num_labels]);
  t.ok(inputs.label!.toFloat32().every((v) => v === 0), 'labels zero');

  // By hand: the clip of num_frames frames at 25 fps centred on the video's middle, and its audio.
  const probe = await probeMedia(TWO_COLOURS);
  const start = videoDuration(probe) / 2 - frames / 25 / 2;
  const video = await decodeVideoFrames(TWO_COLOURS, { frames, width: size, height: size, fps: 25, start });
  const track = await decodeVideoAudio(TWO_COLOURS, { sampleRate: rate, start, durationSeconds: frames / 25 });
  const sound = await decodeAudio(file('hum100.wav'), { sampleRate: rate });
  const offset = Math.floor((sound.samples.length - samples) / 2);
  const still = await (await import('sharp')).default(await readFile(file('orange.png'))).resize(size, size, { fit: 'cover', kernel: 'cubic' }).removeAlpha().raw().toBuffer();
  const image = new Float32Array(4 * frames * 3 * size * size);
  const audio = new Float32Array(4 * samples);
  const per = frames * 3 * size * size;
  image.set(video.pixels.data, 0);
  for (let f = 0; f < frames; f++) for (let p = 0; p < size * size; p++) for (let ch = 0; ch < 3; ch++) image[2 * per + (f * 3 + ch) * size * size + p] = still[p * 3 + ch]! / 255;
  const silentProbe = await probeMedia(SILENT_VIDEO);
  const silentStart = Math.max(0, videoDuration(silentProbe) / 2 - frames / 25 / 2);
  const silent = await decodeVideoFrames(SILENT_VIDEO, { frames, width: size, height: size, fps: 25, start: silentStart });
  image.set(silent.pixels.data, 3 * per);
  audio.set(track.samples.subarray(0, samples), 0);
  audio.set(sound.samples.subarray(offset, offset + samples), samples);
  const byHand = {
    image: new Tensor('float32', [4, frames, 3, size, size], image),
    audio: new Tensor('float32', [4, samples, 1], audio),
    label: Tensor.zeros('float32', [4, c.num_labels]),
  };
  t.equal(relativeError(inputs.image!, byHand.image), 0, 'frames as by hand (black for the audio file, the still image repeated)');
  t.equal(relativeError(inputs.audio!, byHand.audio), 0, 'audio as by hand (silent for the image and the silent video)');

  // What those tensors hold.
  const clipFrames = new Tensor('float32', [frames, 3, size, size], inputs.image!.toFloat32().slice(0, per));
  t.ok(meanColour(clipFrames, 0)[0]! > 200 && meanColour(clipFrames, frames - 1)[2]! > 200, 'the clip spans the red-to-blue cut at the middle');
  const audioRows = [0, 1, 2, 3].map((b) => inputs.audio!.toFloat32().slice(b * samples, (b + 1) * samples));
  t.ok(Math.abs(sineFrequency(audioRows[0]!, rate) - 100) <= 100 / (samples / rate) / 2 + 1, `video audio: 100 Hz at ${rate} Hz`);
  t.ok(Math.abs(sineFrequency(audioRows[1]!, rate) - 100) <= 100 / (samples / rate) / 2 + 1, 'audio file: 100 Hz');
  t.ok(peak(audioRows[1]!) > 0.4, 'audio file: its amplitude');
  t.ok(audioRows[2]!.every((v) => v === 0) && audioRows[3]!.every((v) => v === 0), 'image and silent video: silent audio');
  t.ok(inputs.image!.toFloat32().slice(per, 2 * per).every((v) => v === 0), 'audio file: black frames');
  near(t, meanColour(new Tensor('float32', [frames, 3, size, size], inputs.image!.toFloat32().slice(2 * per, 3 * per)), frames - 1), [255, 128, 0], 1, 'image: its colour in every frame');

  const embedded = await model.embed(call.inputs);
  t.same(embedded.shape, [4, c.d_latents]);
  t.equal(relativeError(embedded, await model.embed(byHand)), 0, 'embed as by hand');
  await t.rejects(builder.load(file('short.txt')), InvalidArgumentError, 'text for the multimodal model');
  await t.rejects(builder.load(file('truncated.mp4')), MediaDecodeError);
});

t.test('models that take no media files: InvalidArgumentError saying what they take', async (t) => {
  const flow = await AutoModel.fromPretrained(fixtureDir('optical-flow'));
  t.teardown(() => flow.dispose());
  const error = (() => {
    try {
      createMediaInputBuilder(flow);
    } catch (e) {
      return e;
    }
  })();
  t.ok(error instanceof InvalidArgumentError, 'optical flow: InvalidArgumentError');
  t.match((error as Error).message, /pairs of video frames/);
  const bare = new PerceiverModel(await PerceiverConfig.fromPretrained(fixtureDir('text-mlm')));
  t.throws(() => createMediaInputBuilder(bare), { name: 'InvalidArgumentError', message: /no media preprocessor/ });
  t.throws(() => createMediaInputBuilder({} as never), InvalidArgumentError);
});
