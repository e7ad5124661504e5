/**
 * Request bodies of the HTTP service: the raw bytes of an `application/json` body to its inputs and
 * options. Bodies up to INLINE_BODY_BYTES are read on the main thread (well under a millisecond);
 * larger ones in a worker thread (body_worker.ts), since JSON.parse, the base64 check and its
 * decoding cost about 4 ms per MB there.
 *
 * The input is under exactly one key, a string or a non-empty array of strings (at most
 * `maxItems`):
 * - `input` (OpenAI) or `inputs` (Hugging Face text-embeddings-inference, TEI): texts for a text
 *   model, base64 image files (or data URLs) for an image model;
 * - `text` or `image` (this service's own bodies), whatever the model.
 * Texts are cut to the part the model can use (`textCodeUnits`, from the end the truncation
 * direction keeps), with `cut` saying whether anything was dropped, so that an over-long text is
 * still recognised as one.
 *
 * The options every route may read are checked here too (types and values); which route uses which
 * is the server's business. Nothing here throws: a bad body comes back as `{ kind: 'error' }`, so the
 * same answer crosses the thread boundary unchanged.
 */

/** One input of a request. */
export type BodyInput = { kind: 'text'; text: string; cut: boolean } | { kind: 'image'; image: Uint8Array };

/** The checked options of a body (absent when not given). */
export interface BodyOptions {
  /** OpenAI: which model (routing). */
  model?: string;
  /** OpenAI: 'float' (default) or 'base64' (little-endian float32). */
  encodingFormat?: 'float' | 'base64';
  /** OpenAI: requested embedding size. */
  dimensions?: number;
  /** TEI: scale embeddings to unit length. */
  normalize?: boolean;
  /** TEI: cut over-long texts instead of refusing them. */
  truncate?: boolean;
  /** TEI: which end of an over-long text is kept ('right' cuts the end, keeping the start). */
  truncationDirection?: 'left' | 'right';
  /** TEI /predict: logits instead of probabilities. */
  rawScores?: boolean;
  /** How many labels /predict and /classify return. */
  topK?: number;
}

/** What the service reads from a body. */
export type ParsedBody =
  | {
      kind: 'inputs';
      /** The key the inputs came under. */
      key: 'input' | 'inputs' | 'text' | 'image';
      /** The served model the body goes to. */
      target: string;
      /** Whether they came as an array (answered as an array). */
      batched: boolean;
      inputs: BodyInput[];
      options: BodyOptions;
    }
  | { kind: 'error'; status: number; code: string; message: string };

/** What a body needs to know of a served model. */
export interface BodyTarget {
  /** The longest part of a text that can change the model's input, in UTF-16 code units. */
  textCodeUnits: number;
  /** What `input` and `inputs` carry. */
  modality: 'text' | 'image';
}

/** What the worker receives. */
export interface BodyTask {
  bytes: Uint8Array;
  /** The served models by name. */
  targets: Record<string, BodyTarget>;
  /** The model named by the URL (/models/NAME/...), if any. */
  target?: string;
  /** The model a body naming none (or, with one model, naming another) goes to. */
  fallback: string;
  /** Most inputs in one body. */
  maxItems: number;
}

/** Bodies up to this size are parsed on the main thread. */
export const INLINE_BODY_BYTES = 256 * 1024;

const INPUT_KEYS = ['input', 'inputs', 'text', 'image'] as const;
const USAGE = '{"inputs": ...}, {"input": ...}, {"text": ...} or {"image": "<base64>"}';

function bad(code: string, message: string, status = 400): ParsedBody {
  return { kind: 'error', status, code, message };
}

function describeJson(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value === 'object' ? 'an object' : typeof value;
}

/** Checks the options; a message for the first bad one, or the options. */
function readOptions(body: Record<string, unknown>): BodyOptions | string {
  const options: BodyOptions = {};
  const { model, encoding_format, dimensions, normalize, truncate, truncation_direction, raw_scores, top_k, user } = body;
  if (model !== undefined && model !== null) {
    if (typeof model !== 'string') return `"model" must be a string, got ${describeJson(model)}`;
    options.model = model;
  }
  if (user !== undefined && user !== null && typeof user !== 'string') return `"user" must be a string, got ${describeJson(user)}`;
  if (encoding_format !== undefined && encoding_format !== null) {
    if (encoding_format !== 'float' && encoding_format !== 'base64') return `"encoding_format" must be "float" or "base64", got ${JSON.stringify(encoding_format)}`;
    options.encodingFormat = encoding_format;
  }
  if (dimensions !== undefined && dimensions !== null) {
    if (typeof dimensions !== 'number' || !Number.isSafeInteger(dimensions) || dimensions < 1) return `"dimensions" must be a positive integer, got ${JSON.stringify(dimensions)}`;
    options.dimensions = dimensions;
  }
  for (const [name, value, field] of [
    ['normalize', normalize, 'normalize'],
    ['truncate', truncate, 'truncate'],
    ['raw_scores', raw_scores, 'rawScores'],
  ] as const) {
    if (value === undefined || value === null) continue;
    if (typeof value !== 'boolean') return `"${name}" must be true or false, got ${describeJson(value)}`;
    options[field] = value;
  }
  if (truncation_direction !== undefined && truncation_direction !== null) {
    // TEI spells them "Left" and "Right".
    const direction = typeof truncation_direction === 'string' ? truncation_direction.toLowerCase() : undefined;
    if (direction !== 'left' && direction !== 'right') return `"truncation_direction" must be "left" or "right", got ${JSON.stringify(truncation_direction)}`;
    options.truncationDirection = direction;
  }
  if (top_k !== undefined && top_k !== null) {
    if (typeof top_k !== 'number' || !Number.isSafeInteger(top_k) || top_k < 1) return `"top_k" must be a positive integer, got ${JSON.stringify(top_k)}`;
    options.topK = top_k;
  }
  return options;
}

function readImage(value: string, where: string): BodyInput | string {
  const b64 = value.replace(/^data:[^,]*;base64,/, '').replace(/\s+/g, '');
  if (b64 === '' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(b64)) return `${where} is not valid base64 (send the base64 of an image file, or a data URL)`;
  const decoded = Buffer.from(b64, 'base64');
  if (decoded.length === 0) return `${where} decodes to no bytes`;
  return { kind: 'image', image: new Uint8Array(decoded.buffer, decoded.byteOffset, decoded.length) };
}

/** Parses and checks one body (main thread or worker). */
export function readBody(bytes: Uint8Array, task: Omit<BodyTask, 'bytes'>): ParsedBody {
  if (bytes.byteLength === 0) return bad('ERR_PERCEIVER_INVALID_JSON', `the body is empty: send ${USAGE}`);
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (error) {
    return bad('ERR_PERCEIVER_INVALID_JSON', `the body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return bad('ERR_PERCEIVER_BAD_REQUEST', `the body must be a JSON object: ${USAGE}, got ${describeJson(body)}`);
  }
  const record = body as Record<string, unknown>;
  const keys = INPUT_KEYS.filter((key) => record[key] !== undefined);
  if (keys.length === 0) return bad('ERR_PERCEIVER_BAD_REQUEST', `the body has no input: send ${USAGE}`);
  if (keys.length > 1) return bad('ERR_PERCEIVER_BAD_REQUEST', `give one input key, not ${keys.map((k) => `"${k}"`).join(' and ')}`);
  const key = keys[0]!;
  const options = readOptions(record);
  if (typeof options === 'string') return bad('ERR_PERCEIVER_BAD_REQUEST', options);

  // Routing: the URL's model, else the body's "model" when it names a served one. With one model
  // any name is taken (as text-embeddings-inference does: clients send names of their own).
  const names = Object.keys(task.targets);
  let target = task.target ?? (options.model !== undefined && Object.hasOwn(task.targets, options.model) ? options.model : undefined);
  if (target === undefined) {
    if (options.model !== undefined && names.length > 1) {
      return bad('ERR_PERCEIVER_MODEL_NOT_FOUND', `no model named ${JSON.stringify(options.model)} is served here; the models are ${names.map((n) => JSON.stringify(n)).join(', ')}`, 404);
    }
    target = task.fallback;
  }
  const { modality, textCodeUnits } = task.targets[target]!;
  const value = record[key];
  const batched = Array.isArray(value);
  const list: unknown[] = batched ? (value as unknown[]) : [value];
  if (list.length === 0) return bad('ERR_PERCEIVER_BAD_REQUEST', `"${key}" is an empty array: give at least one input`);
  if (list.length > task.maxItems) {
    return bad('ERR_PERCEIVER_BATCH_TOO_LARGE', `"${key}" holds ${list.length} inputs; at most ${task.maxItems} are taken in one request (max client batch size)`, 413);
  }
  const kind = key === 'text' ? 'text' : key === 'image' ? 'image' : modality;
  const keepEnd = options.truncationDirection === 'left';
  const inputs: BodyInput[] = [];
  // A plain loop: holes in a sparse array are read (as undefined, refused), not skipped.
  for (let i = 0; i < list.length; i++) {
    const item = list[i];
    const where = batched ? `"${key}"[${i}]` : `"${key}"`;
    if (typeof item !== 'string') {
      const tokens = Array.isArray(item) || typeof item === 'number' ? ' (token ids are not taken: send text)' : '';
      return bad('ERR_PERCEIVER_BAD_REQUEST', `${where} must be a string${kind === 'image' ? ': the base64 of an image file' : ''}, got ${describeJson(item)}${tokens}`);
    }
    if (kind === 'text') {
      inputs.push({ kind: 'text', text: keepEnd ? cutTextEnd(item, textCodeUnits) : cutText(item, textCodeUnits), cut: item.length > textCodeUnits });
    } else {
      const image = readImage(item, where);
      if (typeof image === 'string') return bad('ERR_PERCEIVER_BAD_REQUEST', image);
      inputs.push(image);
    }
  }
  return { kind: 'inputs', key, target, batched, inputs, options };
}

/** The first `codeUnits` UTF-16 code units of `text`, never splitting a surrogate pair. */
export function cutText(text: string, codeUnits: number): string {
  if (text.length <= codeUnits) return text;
  const last = text.charCodeAt(codeUnits - 1);
  // A high surrogate at the end would be half a character: keep its pair.
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? codeUnits + 1 : codeUnits);
}

/** The last `codeUnits` UTF-16 code units of `text`, never splitting a surrogate pair. */
export function cutTextEnd(text: string, codeUnits: number): string {
  if (text.length <= codeUnits) return text;
  const start = text.length - codeUnits;
  const first = text.charCodeAt(start);
  // A low surrogate at the start would be half a character: keep its pair.
  return text.slice(first >= 0xdc00 && first <= 0xdfff ? start - 1 : start);
}
