/** Wording shared by the local and the queued batch commands: one failure, one sentence. */
import { MEDIA_KINDS, mediaKindOf, type MediaKind } from '../media/kinds.js';

/** The line for an item skipped as unreadable. Decode errors name the file already; others get it in front. */
export function skippedLine(label: string, failure: { path: string; reason: string }): string {
  return `${label}: skipped: ${failure.reason.includes(failure.path) ? failure.reason : `${failure.path}: ${failure.reason}`}`;
}

const PLURAL: Record<MediaKind, [string, string]> = { text: ['text file', 'text files'], image: ['image', 'images'], audio: ['audio file', 'audio files'], video: ['video', 'videos'] };

function list(words: string[]): string {
  return words.length <= 1 ? (words[0] ?? '') : `${words.slice(0, -1).join(', ')} and ${words.at(-1)}`;
}

/**
 * Splits `items` into those of a kind the model reads (or of no known kind: they fail on their own)
 * and those of a known kind it does not; `line` is the one summary line for the latter, e.g.
 * "30 images ignored: this model reads text files", or undefined when none.
 */
export function filterByKind<T extends { path: string }>(items: T[], accepts: readonly MediaKind[], label: string): { kept: T[]; ignored: number; line?: string } {
  const byKind = new Map<MediaKind, number>();
  const kept = items.filter((item) => {
    const kind = mediaKindOf(item.path);
    if (kind === undefined || accepts.includes(kind)) return true;
    byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
    return false;
  });
  const ignored = items.length - kept.length;
  if (ignored === 0) return { kept, ignored };
  // In the fixed order of MEDIA_KINDS, not the order the files came in.
  const counts = MEDIA_KINDS.flatMap((kind) => (byKind.has(kind) ? [[kind, byKind.get(kind)!] as const] : [])).map(([kind, n]) => `${n} ${PLURAL[kind][n === 1 ? 0 : 1]}`);
  return { kept, ignored, line: `${label}: ${list(counts)} ignored: this model reads ${list(accepts.map((kind) => PLURAL[kind][1]))}` };
}

/** The line for inputs on the command line that name nothing (skipped and counted). */
export function missingLine(label: string, missing: { actual: string }[]): string {
  const shown = missing.slice(0, 5).map((e) => e.actual);
  const more = missing.length > shown.length ? ` and ${missing.length - shown.length} more` : '';
  return `${label}: ${missing.length} input${missing.length === 1 ? '' : 's'} not found, skipped: ${shown.join(', ')}${more}`;
}
