/**
 * Request bodies of the HTTP service: the raw bytes of an `application/json` body to the one input a
 * request carries, `{ text }` (cut to what the model can use) or `{ image }` (the decoded bytes of the
 * base64 file). Bodies up to INLINE_BODY_BYTES are read on the main thread (well under a
 * millisecond); larger ones in a worker thread (body_worker.ts), since JSON.parse, the base64 check
 * and its decoding cost about 4 ms per MB there.
 *
 * Nothing here throws: a bad body comes back as `{ error }`, so the same answer crosses the thread
 * boundary unchanged.
 */

/** What the service reads from a body. */
export type ParsedBody =
  | { kind: 'text'; text: string }
  | { kind: 'image'; image: Uint8Array }
  | { kind: 'error'; status: number; code: string; message: string };

/** What the worker receives. */
export interface BodyTask {
  bytes: Uint8Array;
  /** The longest prefix of the text that can change the model's input, in UTF-16 code units. */
  textCodeUnits: number;
}

/** Bodies up to this size are parsed on the main thread. */
export const INLINE_BODY_BYTES = 256 * 1024;

function bad(code: string, message: string): ParsedBody {
  return { kind: 'error', status: 400, code, message };
}

function describeJson(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value === 'object' ? 'an object' : typeof value;
}

/** Parses and checks one body (main thread or worker). */
export function readBody(bytes: Uint8Array, textCodeUnits: number): ParsedBody {
  if (bytes.byteLength === 0) return bad('ERR_PERCEIVER_INVALID_JSON', 'the body is empty: send {"text": "..."} or {"image": "<base64>"}');
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (error) {
    return bad('ERR_PERCEIVER_INVALID_JSON', `the body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return bad('ERR_PERCEIVER_BAD_REQUEST', `the body must be a JSON object: {"text": "..."} or {"image": "<base64>"}, got ${describeJson(body)}`);
  }
  const { text, image } = body as { text?: unknown; image?: unknown };
  if (text !== undefined && image !== undefined) return bad('ERR_PERCEIVER_BAD_REQUEST', 'give either "text" or "image", not both');
  if (text !== undefined) {
    if (typeof text !== 'string') return bad('ERR_PERCEIVER_BAD_REQUEST', `"text" must be a string, got ${describeJson(text)}`);
    return { kind: 'text', text: cutText(text, textCodeUnits) };
  }
  if (image !== undefined) {
    if (typeof image !== 'string') return bad('ERR_PERCEIVER_BAD_REQUEST', `"image" must be a string: the base64 of an image file, got ${describeJson(image)}`);
    const b64 = image.replace(/^data:[^,]*;base64,/, '').replace(/\s+/g, '');
    if (b64 === '' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(b64)) return bad('ERR_PERCEIVER_BAD_REQUEST', '"image" is not valid base64');
    const decoded = Buffer.from(b64, 'base64');
    if (decoded.length === 0) return bad('ERR_PERCEIVER_BAD_REQUEST', '"image" decodes to no bytes');
    return { kind: 'image', image: new Uint8Array(decoded.buffer, decoded.byteOffset, decoded.length) };
  }
  return bad('ERR_PERCEIVER_BAD_REQUEST', 'the body has neither "text" nor "image"');
}

/** The first `codeUnits` UTF-16 code units of `text`, never splitting a surrogate pair. */
export function cutText(text: string, codeUnits: number): string {
  if (text.length <= codeUnits) return text;
  const last = text.charCodeAt(codeUnits - 1);
  // A high surrogate at the end would be half a character: keep its pair.
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? codeUnits + 1 : codeUnits);
}
