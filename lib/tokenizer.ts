/**
 * The byte-level tokenizer of Hugging Face's Perceiver IO language models (`PerceiverTokenizer`).
 *
 * The vocabulary is 6 special tokens followed by the 256 byte values: `[PAD]`=0, `[BOS]`=1, `[EOS]`=2,
 * `[MASK]`=3, `[CLS]`=4, `[SEP]`=5, and byte `b` -> `b + 6` (262 ids). A text is encoded as its UTF-8 bytes;
 * with special tokens a sequence becomes `[CLS] bytes [SEP]`. As in transformers, the literal strings of the
 * special tokens inside a text (e.g. `"[MASK]"`) are encoded as their ids, not as bytes.
 */
import { InvalidArgumentError } from './errors.js';
import { Tensor } from './tensor.js';

/** Padding strategy: `true`/`'longest'` pads to the longest sequence, `'max_length'` to `maxLength`. */
export type PaddingStrategy = boolean | 'longest' | 'max_length' | 'do_not_pad';

export interface PerceiverTokenizerOptions {
  /** Default length for truncation and `'max_length'` padding (2048, as in transformers). */
  modelMaxLength?: number;
}

export interface EncodeOptions {
  /** Wrap the sequence as `[CLS] ... [SEP]` (default true). */
  addSpecialTokens?: boolean;
  /** Length limit for truncation (default `modelMaxLength`). */
  maxLength?: number;
  /** Cut the text so that the whole sequence, special tokens included, fits `maxLength`.
   * Defaults to true when `maxLength` is given without padding, as transformers does. */
  truncation?: boolean;
}

export interface CallOptions extends EncodeOptions {
  /** Padding strategy (default: no padding). Padding is on the right with `[PAD]` and attention mask 0. */
  padding?: PaddingStrategy;
  /** When padding, round the padded length up to a multiple of this. */
  padToMultipleOf?: number;
}

export interface DecodeOptions {
  /** Drop special tokens instead of rendering them as `"[CLS]"` etc. (default false). */
  skipSpecialTokens?: boolean;
}

export interface BatchEncoding {
  /** Token ids, shape [batch, length]. */
  inputIds: Tensor<'int64'>;
  /** 1 for real tokens, 0 for padding, shape [batch, length]. */
  attentionMask: Tensor<'int64'>;
}

const SPECIAL_TOKENS = ['[PAD]', '[BOS]', '[EOS]', '[MASK]', '[CLS]', '[SEP]'] as const;
const BYTE_OFFSET = SPECIAL_TOKENS.length;
const VOCAB_SIZE = BYTE_OFFSET + 256;
const OPEN_BRACKET_ID = 0x5b + BYTE_OFFSET;
/** The longest rendering of a special token in bytes ("[MASK]"). */
const MAX_SPECIAL_BYTES = 6;

/**
 * The most token ids one encode() or call() produces (all texts together, padding included):
 * 2^24 ids, 128 MiB per int64 tensor. Far beyond any Perceiver's max_position_embeddings times a
 * batch, and low enough that a huge text, batch or padding length is refused with a typed error
 * instead of exhausting the heap (which kills the process).
 */
export const MAX_BATCH_TOKENS = 2 ** 24;
/** The most texts one call() takes (each costs a row even when empty). */
export const MAX_BATCH_TEXTS = 2 ** 20;

const PADDINGS: readonly unknown[] = [true, false, 'longest', 'max_length', 'do_not_pad'];

const encoder = new TextEncoder();
// Like Python's bytes.decode('utf-8', errors='replace'): invalid sequences become U+FFFD and a BOM is kept.
const decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

function checkOptions<T extends object>(options: unknown): Partial<T> {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw new InvalidArgumentError('options', 'an object of options', options);
  return options as Partial<T>;
}

function checkPositiveInteger(value: unknown, argument: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new InvalidArgumentError(argument, 'a positive integer', value);
  }
  return value;
}

function checkBoolean(value: unknown, argument: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new InvalidArgumentError(argument, 'a boolean', value);
  return value;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

function tooManyTokens(argument: string, count: string): InvalidArgumentError {
  return new InvalidArgumentError(argument, `at most ${MAX_BATCH_TOKENS} token ids in one call (truncate, or split the batch)`, count);
}

export class PerceiverTokenizer {
  readonly padTokenId = 0;
  readonly bosTokenId = 1;
  readonly eosTokenId = 2;
  readonly maskTokenId = 3;
  readonly clsTokenId = 4;
  readonly sepTokenId = 5;
  /** Number of ids: 6 special tokens + 256 bytes. */
  readonly vocabSize = VOCAB_SIZE;
  /** Default maximum sequence length. */
  readonly modelMaxLength: number;
  /** Special token strings to their ids (`"[PAD]"` -> 0 ... `"[SEP]"` -> 5). */
  readonly specialTokens: ReadonlyMap<string, number> = new Map(SPECIAL_TOKENS.map((token, id) => [token, id]));

  constructor(options: PerceiverTokenizerOptions = {}) {
    const { modelMaxLength } = checkOptions<PerceiverTokenizerOptions>(options);
    this.modelMaxLength = modelMaxLength === undefined ? 2048 : checkPositiveInteger(modelMaxLength, 'modelMaxLength');
  }

  /** Encodes one text to token ids (no padding). With truncation only the prefix of the text that fits is read. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const o = checkOptions<EncodeOptions>(options);
    const addSpecialTokens = checkBoolean(o.addSpecialTokens, 'addSpecialTokens', true);
    const maxLength = o.maxLength === undefined ? undefined : checkPositiveInteger(o.maxLength, 'maxLength');
    const truncation = checkBoolean(o.truncation, 'truncation', maxLength !== undefined);
    if (typeof text !== 'string') throw new InvalidArgumentError('text', 'a string', text);
    const ids = this.encodeOne(text, addSpecialTokens, truncation ? (maxLength ?? this.modelMaxLength) : undefined, MAX_BATCH_TOKENS);
    if (ids === undefined) throw tooManyTokens('text', 'a longer text');
    return ids;
  }

  /** Encodes one text or a batch into `[batch, length]` int64 tensors of ids and attention mask. */
  call(texts: string | string[], options: CallOptions = {}): BatchEncoding {
    const o = checkOptions<CallOptions>(options);
    const addSpecialTokens = checkBoolean(o.addSpecialTokens, 'addSpecialTokens', true);
    const maxLengthOption = o.maxLength;
    const maxLength = maxLengthOption === undefined ? undefined : checkPositiveInteger(maxLengthOption, 'maxLength');
    const padding = o.padding ?? false;
    if (!PADDINGS.includes(padding)) throw new InvalidArgumentError('padding', "a boolean, 'longest', 'max_length' or 'do_not_pad'", padding);
    const padToMultipleOfOption = o.padToMultipleOf;
    const padToMultipleOf = padToMultipleOfOption === undefined ? undefined : checkPositiveInteger(padToMultipleOfOption, 'padToMultipleOf');
    const pads = padding !== false && padding !== 'do_not_pad';
    const truncation = checkBoolean(o.truncation, 'truncation', maxLength !== undefined && !pads);
    const limit = truncation ? (maxLength ?? this.modelMaxLength) : undefined;

    const single = typeof texts === 'string';
    if (!single && (!Array.isArray(texts) || texts.length === 0)) {
      throw new InvalidArgumentError('texts', 'a string or a non-empty array of strings', texts);
    }
    const list: readonly unknown[] = single ? [texts] : texts;
    const count = list.length;
    if (count > MAX_BATCH_TEXTS) throw new InvalidArgumentError('texts', `at most ${MAX_BATCH_TEXTS} texts in one call (split the batch)`, `${count} texts`);
    // A plain loop, not map(): holes in a sparse array are read (as undefined, rejected) rather than skipped.
    const sequences: number[][] = [];
    let total = 0;
    let longest = 0;
    for (let i = 0; i < count; i++) {
      const text = list[i];
      const argument = single ? 'texts' : `texts[${i}]`;
      if (typeof text !== 'string') throw new InvalidArgumentError(argument, 'a string', text);
      const seq = this.encodeOne(text, addSpecialTokens, limit, MAX_BATCH_TOKENS - total);
      if (seq === undefined) throw tooManyTokens('texts', `more than ${MAX_BATCH_TOKENS} ids by ${argument}`);
      sequences.push(seq);
      total += seq.length;
      if (seq.length > longest) longest = seq.length;
    }

    let length = longest;
    if (pads) {
      length = padding === 'max_length' ? (maxLength ?? this.modelMaxLength) : longest;
      if (padToMultipleOf !== undefined) length = Math.ceil(length / padToMultipleOf) * padToMultipleOf;
    }
    const mismatch = sequences.findIndex((s) => (pads ? s.length > length : s.length !== length));
    if (mismatch >= 0) {
      const shown = sequences.slice(0, 8).map((s) => s.length).join(', ') + (count > 8 ? ', ...' : '');
      throw new InvalidArgumentError(
        'texts',
        `sequences of equal length to make a tensor (use padding: true, or truncation with padding: 'max_length')`,
        `lengths ${shown} (texts[${mismatch}] has ${sequences[mismatch]!.length})${pads ? ` for padded length ${length}` : ''}`,
      );
    }
    if (count * length > MAX_BATCH_TOKENS) throw tooManyTokens('texts', `${count} sequences padded to ${length}`);

    const ids = new BigInt64Array(count * length);
    const mask = new BigInt64Array(count * length);
    // Ids are small non-negative integers: writing the low 32-bit word of each little-endian
    // int64 (the high word stays 0) avoids a BigInt per token. Little-endian, as everywhere here.
    const ids32 = new Int32Array(ids.buffer);
    const mask32 = new Int32Array(mask.buffer);
    for (let b = 0; b < count; b++) {
      const seq = sequences[b]!;
      const row = 2 * b * length;
      for (let j = 0; j < seq.length; j++) {
        ids32[row + 2 * j] = seq[j]!;
        mask32[row + 2 * j] = 1;
      }
    }
    const shape = [count, length];
    return { inputIds: new Tensor('int64', shape, ids), attentionMask: new Tensor('int64', shape, mask) };
  }

  /** Decodes ids to text; invalid UTF-8 becomes U+FFFD. A tensor must be rank 1 (or [1, length]). */
  decode(ids: ArrayLike<number | bigint> | Tensor, options: DecodeOptions = {}): string {
    const skip = checkBoolean(checkOptions<DecodeOptions>(options).skipSpecialTokens, 'skipSpecialTokens', false);
    if (ids instanceof Tensor && !(ids.rank === 1 || (ids.rank === 2 && ids.shape[0] === 1))) {
      throw new InvalidArgumentError('ids', 'a tensor of shape [length] or [1, length]', `shape [${ids.shape.join(', ')}]`);
    }
    return this.decodeOne(ids, 'ids', skip);
  }

  /** Decodes each row of a `[batch, length]` tensor or an array of id arrays. */
  batchDecode(ids: Tensor | ArrayLike<number | bigint>[], options: DecodeOptions = {}): string[] {
    const skip = checkBoolean(checkOptions<DecodeOptions>(options).skipSpecialTokens, 'skipSpecialTokens', false);
    const out: string[] = [];
    if (ids instanceof Tensor) {
      if (ids.rank !== 2) throw new InvalidArgumentError('ids', 'a tensor of shape [batch, length]', `shape [${ids.shape.join(', ')}]`);
      const [batch, length] = ids.shape as [number, number];
      for (let b = 0; b < batch; b++) out.push(this.decodeOne(ids, `ids[${b}]`, skip, b * length, length));
      return out;
    }
    if (!Array.isArray(ids)) throw new InvalidArgumentError('ids', 'a [batch, length] tensor or an array of id arrays', ids);
    // A plain loop: a hole in a sparse array is a missing row (rejected), not a skipped one.
    for (let b = 0; b < ids.length; b++) out.push(this.decodeOne(ids[b], `ids[${b}]`, skip));
    return out;
  }

  /**
   * The ids of one text, special tokens added: at most `limit` ids (truncating) when a limit is
   * given, and only as much of the text is encoded as that needs. `undefined` when the sequence
   * would exceed `room` ids (the call's remaining MAX_BATCH_TOKENS budget).
   */
  private encodeOne(text: string, addSpecialTokens: boolean, limit: number | undefined, room: number): number[] | undefined {
    const added = addSpecialTokens ? 2 : 0;
    if (limit !== undefined && limit < added) {
      throw new InvalidArgumentError('maxLength', `at least ${added} to hold the special tokens when truncating`, limit);
    }
    const keep = limit === undefined ? Infinity : limit - added; // text ids the length limit keeps
    const fit = room - added; // text ids the call's budget still allows
    if (fit < 0) return undefined;
    // One id past the budget is enough to know the text does not fit.
    const ids = textIds(text, Math.min(keep, fit + 1));
    if (ids.length > fit) return undefined;
    if (!addSpecialTokens) return ids;
    ids.unshift(this.clsTokenId);
    ids.push(this.sepTokenId);
    return ids;
  }

  /** Decodes ids[offset, offset + length) (the whole list by default). */
  private decodeOne(ids: unknown, argument: string, skipSpecialTokens: boolean, offset = 0, length?: number): string {
    let at: (i: number) => unknown;
    let count: number;
    if (ids instanceof Tensor) {
      at = (i) => ids.get(offset + i);
      count = length ?? ids.size;
    } else if (Array.isArray(ids) || (ArrayBuffer.isView(ids) && !(ids instanceof DataView))) {
      const values = ids as ArrayLike<unknown>;
      at = (i) => values[i];
      count = values.length;
    } else {
      throw new InvalidArgumentError(argument, 'an array of token ids or a tensor', ids);
    }
    // At most MAX_SPECIAL_BYTES bytes per id; grown as needed rather than sized for the worst case.
    let bytes = new Uint8Array(Math.min(count, 1 << 16));
    let n = 0;
    for (let i = 0; i < count; i++) {
      const v = at(i);
      const id = typeof v === 'bigint' ? Number(v) : v;
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= VOCAB_SIZE) {
        throw new InvalidArgumentError(`${argument}[${i}]`, `an integer token id in [0, ${VOCAB_SIZE})`, v);
      }
      if (n + MAX_SPECIAL_BYTES > bytes.length) {
        const grown = new Uint8Array(Math.max(bytes.length * 2, n + MAX_SPECIAL_BYTES));
        grown.set(bytes.subarray(0, n));
        bytes = grown;
      }
      if (id >= BYTE_OFFSET) bytes[n++] = id - BYTE_OFFSET;
      else if (!skipSpecialTokens) n += encoder.encodeInto(SPECIAL_TOKENS[id]!, bytes.subarray(n)).written;
    }
    return decoder.decode(bytes.subarray(0, n));
  }
}

/**
 * The byte ids of `text` (special-token strings as their ids, no [CLS]/[SEP] added), at most
 * `limit` of them. Only the prefix of the text that can fit is encoded: every UTF-16 code unit
 * gives at least one id, so no more than `limit` code units past the current position can matter.
 * Truncation is byte-level, as transformers': a character cut at the limit keeps its first bytes.
 */
function textIds(text: string, limit: number): number[] {
  const ids: number[] = [];
  let pos = 0;
  while (pos < text.length && ids.length < limit) {
    const room = limit - ids.length;
    let end = room >= text.length - pos ? text.length : pos + room;
    // Never cut a surrogate pair: half of one would encode as U+FFFD.
    if (end < text.length && isHighSurrogate(text.charCodeAt(end - 1))) end++;
    const window = text.slice(pos, end);
    const bracket = window.indexOf('[');
    const segment = bracket < 0 ? window : window.slice(0, bracket);
    appendBytes(segment, ids, limit);
    if (bracket < 0 || ids.length >= limit) {
      pos = end;
      continue;
    }
    const at = pos + bracket;
    const special = SPECIAL_TOKENS.findIndex((token) => text.startsWith(token, at));
    if (special >= 0) {
      ids.push(special);
      pos = at + SPECIAL_TOKENS[special]!.length;
    } else {
      ids.push(OPEN_BRACKET_ID);
      pos = at + 1;
    }
  }
  return ids;
}

/** Appends the UTF-8 byte ids of `segment` to `ids`, stopping at `limit` ids. Lone surrogates become U+FFFD, as TextEncoder writes them. */
function appendBytes(segment: string, ids: number[], limit: number): void {
  const room = limit - ids.length;
  if (segment.length === 0 || room <= 0) return;
  // A UTF-16 code unit is at most 3 UTF-8 bytes.
  const bytes = new Uint8Array(Math.min(room, segment.length * 3));
  const { read, written } = encoder.encodeInto(segment, bytes);
  for (let i = 0; i < written; i++) ids.push(bytes[i]! + BYTE_OFFSET);
  if (read < segment.length && written < room) {
    // encodeInto writes whole characters only; the limit cuts the next one after its first bytes.
    const next = encoder.encode(String.fromCodePoint(segment.codePointAt(read)!));
    for (let i = 0; i < next.length && ids.length < limit; i++) ids.push(next[i]! + BYTE_OFFSET);
  }
}
