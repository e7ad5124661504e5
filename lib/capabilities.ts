/** What this installation can run: which backends are compiled in, which are usable, and why not. */
import { loadAddon, type NativeCapabilities } from './native/binding.js';

export type Capabilities = NativeCapabilities;

export function capabilities(): Capabilities {
  return loadAddon().capabilities();
}
