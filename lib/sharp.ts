/**
 * sharp, loaded on first use by the media inputs and the pipelines' picture writers: one loader,
 * so a missing or foreign "sharp" gives the same typed error, naming what the caller was doing.
 * (lib/image_processor.ts keeps its own copy: its test replaces "sharp" inside that module's own
 * import graph, which a shared loader would sit outside of.)
 */
import { BackendUnavailableError } from './errors.js';

export type SharpFactory = typeof import('sharp').default;
let sharpPromise: Promise<SharpFactory> | undefined;

/**
 * The sharp factory. `purpose` says what needs it ("Decoding image files"), and `alternative`, if
 * given, what the caller can do instead; both go into the BackendUnavailableError.
 */
export async function loadSharp(purpose: string, alternative?: string): Promise<SharpFactory> {
  const advice = `Run \`npm install sharp\`${alternative ? `, or ${alternative}` : ''}.`;
  sharpPromise ??= (async () => {
    let mod: { default?: unknown };
    try {
      mod = (await import('sharp')) as { default?: unknown };
    } catch (error) {
      sharpPromise = undefined; // let a later call retry, e.g. after the package was installed
      throw new BackendUnavailableError(`${purpose} needs the "sharp" package, which could not be loaded (${(error as Error).message}). ${advice}`);
    }
    if (typeof mod.default !== 'function') {
      sharpPromise = undefined;
      throw new BackendUnavailableError(`${purpose} needs the "sharp" package, but the module that loaded under that name is not sharp. ${advice}`);
    }
    return mod.default as SharpFactory;
  })();
  return sharpPromise;
}
