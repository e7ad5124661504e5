/**
 * Argument checks for the module constructors (preprocessors, decoders, postprocessors, layers,
 * position encodings). The heads pass values from a validated PerceiverConfig; a caller building
 * modules by hand gets an InvalidArgumentError naming the option instead of a TypeError or a
 * module of NaN channels. Each option is read once.
 */
import { PerceiverConfig } from '../config.js';
import { InvalidArgumentError } from '../errors.js';

/** Widths and counts above this are refused: PerceiverConfig's own bound on any dimension. */
const MAX_SIZE = 1 << 24;

export function checkConfig(config: unknown, argument = 'config'): PerceiverConfig {
  if (!(config instanceof PerceiverConfig)) throw new InvalidArgumentError(argument, 'a PerceiverConfig', config);
  return config;
}

/** An options object (`undefined` allowed unless `required`). */
export function checkModuleOptions<T extends object>(options: unknown, argument = 'options', required = false): Partial<T> {
  if (options === undefined && !required) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw new InvalidArgumentError(argument, 'an object of options', options);
  return options as Partial<T>;
}

/** A positive integer up to 2^24 (`fallback` when undefined; none means required). */
export function positiveSize(value: unknown, argument: string, fallback?: number): number {
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > MAX_SIZE) {
    throw new InvalidArgumentError(argument, `a positive integer up to ${MAX_SIZE}`, value);
  }
  return value;
}

/** Like positiveSize, also taking null (and undefined) as null. */
export function optionalSize(value: unknown, argument: string): number | null {
  return value === undefined || value === null ? null : positiveSize(value, argument);
}

export function flag(value: unknown, argument: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new InvalidArgumentError(argument, 'a boolean', value);
  return value;
}

/** A finite number. */
export function finite(value: unknown, argument: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new InvalidArgumentError(argument, 'a finite number', value);
  return value;
}

/** One size or a short list of sizes (an index grid), as a fresh array. */
export function sizes(value: unknown, argument: string): number[] {
  const list: unknown[] = Array.isArray(value) ? value : [value];
  if (list.length < 1 || list.length > 8) throw new InvalidArgumentError(argument, 'a positive integer or a list of 1 to 8 of them', value);
  const out = list.map((d, i) => positiveSize(d, Array.isArray(value) ? `${argument}[${i}]` : argument));
  if (out.reduce((a, b) => a * b, 1) > MAX_SIZE * 16) throw new InvalidArgumentError(argument, `an index grid of at most ${MAX_SIZE * 16} positions`, `[${out.join(', ')}]`);
  return out;
}

/** One of `values`. */
export function oneOf<T extends string>(value: unknown, argument: string, values: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!values.includes(value as T)) throw new InvalidArgumentError(argument, values.map((v) => JSON.stringify(v)).join(', '), value);
  return value as T;
}

/** A non-empty record of named modules, each passing `isModule`. */
export function moduleRecord<M>(value: unknown, argument: string, isModule: (m: unknown) => boolean, what: string): Record<string, M> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InvalidArgumentError(argument, `an object of ${what} keyed by modality`, value);
  const entries = Object.entries(value);
  if (entries.length === 0) throw new InvalidArgumentError(argument, `at least one modality`, 'an empty object');
  for (const [name, m] of entries) if (!isModule(m)) throw new InvalidArgumentError(`${argument}.${name}`, what, m);
  return Object.fromEntries(entries) as Record<string, M>;
}
