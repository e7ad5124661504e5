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
const SPECIAL_PATTERN = /\[(?:PAD|BOS|EOS|MASK|CLS|SEP)\]/g;

const encoder = new TextEncoder();
// Like Python's bytes.decode('utf-8', errors='replace'): invalid sequences become U+FFFD and a BOM is kept.
const decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

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
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an object', options);
    this.modelMaxLength = options.modelMaxLength === undefined ? 2048 : checkPositiveInteger(options.modelMaxLength, 'modelMaxLength');
  }

  /** Encodes one text to token ids (no padding). */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const maxLength = options.maxLength === undefined ? undefined : checkPositiveInteger(options.maxLength, 'maxLength');
    const truncation = checkBoolean(options.truncation, 'truncation', maxLength !== undefined);
    return this.encodeOne(text, 'text', checkBoolean(options.addSpecialTokens, 'addSpecialTokens', true), truncation ? (maxLength ?? this.modelMaxLength) : undefined);
  }

  /** Encodes one text or a batch into `[batch, length]` int64 tensors of ids and attention mask. */
  call(texts: string | string[], options: CallOptions = {}): BatchEncoding {
    const list = typeof texts === 'string' ? [texts] : texts;
    if (!Array.isArray(list) || list.length === 0) {
      throw new InvalidArgumentError('texts', 'a string or a non-empty array of strings', texts);
    }
    const addSpecialTokens = checkBoolean(options.addSpecialTokens, 'addSpecialTokens', true);
    const maxLength = options.maxLength === undefined ? undefined : checkPositiveInteger(options.maxLength, 'maxLength');
    const padding = options.padding ?? false;
    if (![true, false, 'longest', 'max_length', 'do_not_pad'].includes(padding)) {
      throw new InvalidArgumentError('padding', "a boolean, 'longest', 'max_length' or 'do_not_pad'", padding);
    }
    const padToMultipleOf = options.padToMultipleOf === undefined ? undefined : checkPositiveInteger(options.padToMultipleOf, 'padToMultipleOf');
    const pads = padding !== false && padding !== 'do_not_pad';
    const truncation = checkBoolean(options.truncation, 'truncation', maxLength !== undefined && !pads);
    const limit = truncation ? (maxLength ?? this.modelMaxLength) : undefined;

    const sequences = list.map((text, i) => this.encodeOne(text, `texts[${i}]`, addSpecialTokens, limit));
    const longest = Math.max(...sequences.map((s) => s.length));
    let length = longest;
    if (pads) {
      length = padding === 'max_length' ? (maxLength ?? this.modelMaxLength) : longest;
      if (padToMultipleOf !== undefined) length = Math.ceil(length / padToMultipleOf) * padToMultipleOf;
    }
    if (sequences.some((s) => (pads ? s.length > length : s.length !== length))) {
      throw new InvalidArgumentError(
        'texts',
        `sequences of equal length to make a tensor (use padding: true, or truncation with padding: 'max_length')`,
        `lengths ${sequences.map((s) => s.length).join(', ')}${pads ? ` for padded length ${length}` : ''}`,
      );
    }

    const ids = new BigInt64Array(sequences.length * length);
    const mask = new BigInt64Array(sequences.length * length);
    sequences.forEach((seq, b) => {
      for (let j = 0; j < seq.length; j++) {
        ids[b * length + j] = BigInt(seq[j]!);
        mask[b * length + j] = 1n;
      }
    });
    const shape = [sequences.length, length];
    return { inputIds: new Tensor('int64', shape, ids), attentionMask: new Tensor('int64', shape, mask) };
  }

  /** Decodes ids to text; invalid UTF-8 becomes U+FFFD. A tensor must be rank 1 (or [1, length]). */
  decode(ids: ArrayLike<number | bigint> | Tensor, options: DecodeOptions = {}): string {
    if (ids instanceof Tensor && !(ids.rank === 1 || (ids.rank === 2 && ids.shape[0] === 1))) {
      throw new InvalidArgumentError('ids', 'a tensor of shape [length] or [1, length]', `shape [${ids.shape.join(', ')}]`);
    }
    return this.decodeOne(ids, 'ids', checkBoolean(options.skipSpecialTokens, 'skipSpecialTokens', false));
  }

  /** Decodes each row of a `[batch, length]` tensor or an array of id arrays. */
  batchDecode(ids: Tensor | ArrayLike<number | bigint>[], options: DecodeOptions = {}): string[] {
    const skip = checkBoolean(options.skipSpecialTokens, 'skipSpecialTokens', false);
    if (ids instanceof Tensor) {
      if (ids.rank !== 2) throw new InvalidArgumentError('ids', 'a tensor of shape [batch, length]', `shape [${ids.shape.join(', ')}]`);
      const [batch, length] = ids.shape as [number, number];
      const out: string[] = [];
      for (let b = 0; b < batch; b++) out.push(this.decodeOne(Array.from({ length }, (_, j) => ids.get(b * length + j)), `ids[${b}]`, skip));
      return out;
    }
    if (!Array.isArray(ids)) throw new InvalidArgumentError('ids', 'a [batch, length] tensor or an array of id arrays', ids);
    return ids.map((row, b) => this.decodeOne(row, `ids[${b}]`, skip));
  }

  private encodeOne(text: unknown, argument: string, addSpecialTokens: boolean, maxLength: number | undefined): number[] {
    if (typeof text !== 'string') throw new InvalidArgumentError(argument, 'a string', text);
    // Lone surrogates cannot be UTF-8 encoded; TextEncoder writes them as U+FFFD.
    let ids: number[] = [];
    let start = 0;
    for (const match of text.matchAll(SPECIAL_PATTERN)) {
      for (const byte of encoder.encode(text.slice(start, match.index))) ids.push(byte + BYTE_OFFSET);
      ids.push(this.specialTokens.get(match[0])!);
      start = match.index! + match[0].length;
    }
    for (const byte of encoder.encode(text.slice(start))) ids.push(byte + BYTE_OFFSET);

    const added = addSpecialTokens ? 2 : 0;
    if (maxLength !== undefined && ids.length + added > maxLength) {
      if (maxLength < added) {
        throw new InvalidArgumentError('maxLength', `at least ${added} to hold the special tokens when truncating`, maxLength);
      }
      ids = ids.slice(0, maxLength - added);
    }
    return addSpecialTokens ? [this.clsTokenId, ...ids, this.sepTokenId] : ids;
  }

  private decodeOne(ids: unknown, argument: string, skipSpecialTokens: boolean): string {
    const values: ArrayLike<unknown> | undefined =
      ids instanceof Tensor ? Array.from({ length: ids.size }, (_, i) => ids.get(i))
      : Array.isArray(ids) || (ArrayBuffer.isView(ids) && !(ids instanceof DataView)) ? (ids as ArrayLike<unknown>)
      : undefined;
    if (values === undefined) throw new InvalidArgumentError(argument, 'an array of token ids or a tensor', ids);
    const bytes: number[] = [];
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      const id = typeof v === 'bigint' ? Number(v) : v;
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= VOCAB_SIZE) {
        throw new InvalidArgumentError(`${argument}[${i}]`, `an integer token id in [0, ${VOCAB_SIZE})`, v);
      }
      if (id >= BYTE_OFFSET) bytes.push(id - BYTE_OFFSET);
      else if (!skipSpecialTokens) bytes.push(...encoder.encode(SPECIAL_TOKENS[id]));
    }
    return decoder.decode(new Uint8Array(bytes));
  }
}
