/**
 * What kind of media a file holds, judged by its extension (case-insensitive). The lists are the
 * formats the decoders of this folder read:
 *
 * - text: `.txt`, `.text`, `.md`, `.markdown` (read as UTF-8);
 * - image: `.png`, `.jpg`, `.jpeg`, `.webp`, `.gif`, `.tif`, `.tiff`, `.avif` (sharp; GIF and TIFF
 *   give their first page);
 * - audio: `.wav`, `.wave`, `.flac`, `.mp3`, `.ogg`, `.oga`, `.opus`, `.m4a`, `.aac`, `.aif`,
 *   `.aiff`, `.caf` (audio-decode, pure JS/WASM);
 * - video: `.mp4`, `.m4v`, `.mov`, `.mkv`, `.webm`, `.avi`, `.mpg`, `.mpeg`, `.ogv`, `.3gp`, `.flv`,
 *   `.wmv` (the system ffmpeg).
 *
 * `.ogg` is taken as audio (Ogg Vorbis/Opus) and `.webm` as video, their usual contents.
 */
import { extname } from 'node:path';

export type MediaKind = 'text' | 'image' | 'audio' | 'video';

export const MEDIA_KINDS: readonly MediaKind[] = Object.freeze(['text', 'image', 'audio', 'video']);

/** The extensions of each kind, lower case with the dot. */
export const MEDIA_EXTENSIONS: Readonly<Record<MediaKind, readonly string[]>> = Object.freeze({
  text: Object.freeze(['.txt', '.text', '.md', '.markdown']),
  image: Object.freeze(['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif']),
  audio: Object.freeze(['.wav', '.wave', '.flac', '.mp3', '.ogg', '.oga', '.opus', '.m4a', '.aac', '.aif', '.aiff', '.caf']),
  video: Object.freeze(['.mp4', '.m4v', '.mov', '.mkv', '.webm', '.avi', '.mpg', '.mpeg', '.ogv', '.3gp', '.flv', '.wmv']),
});

const KIND_BY_EXTENSION = new Map<string, MediaKind>(
  (Object.entries(MEDIA_EXTENSIONS) as [MediaKind, readonly string[]][]).flatMap(([kind, list]) => list.map((ext) => [ext, kind] as const)),
);

/** The kind of media a path names by its extension, or undefined for any other extension (or none). */
export function mediaKindOf(path: string): MediaKind | undefined {
  if (typeof path !== 'string') return undefined;
  return KIND_BY_EXTENSION.get(extname(path).toLowerCase());
}
