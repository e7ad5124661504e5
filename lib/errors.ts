/**
 * Typed errors. Every failure a caller can cause (bad arguments, bad files, a missing backend,
 * use after dispose) surfaces as one of these classes, never as a crash of the process. Each has
 * a stable `code` so callers can branch without parsing messages.
 *
 * One exception, by design: a value the caller's own code throws while an argument is read (a
 * getter, a proxy trap) passes through unchanged, as in Node's own APIs, rather than being wrapped.
 * bench/api_fuzz.ts checks both rules on every public entry point.
 */

export class PerceiverError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** An argument had the wrong type, shape, dtype or value. Names the argument, what was expected and what came. */
export class InvalidArgumentError extends PerceiverError {
  readonly argument: string;
  readonly expected: string;
  readonly actual: string;
  /** `message` replaces the generated "Expected ... for ... but received ..." sentence when given. */
  constructor(argument: string, expected: string, actual: unknown, message?: string) {
    const got = typeof actual === 'string' ? actual : describeValue(actual);
    super('ERR_PERCEIVER_INVALID_ARGUMENT', message ?? `Expected ${expected} for ${argument} but received ${got}`);
    this.argument = argument;
    this.expected = expected;
    this.actual = got;
  }
}

/** A weights file is unreadable, truncated, corrupt or hostile. */
export class WeightsFormatError extends PerceiverError {
  readonly file: string;
  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super('ERR_PERCEIVER_WEIGHTS_FORMAT', `${file}: ${message}`, options);
    this.file = file;
  }
}

/**
 * A pickle (pytorch_model.bin) asked for something outside what torch.save writes for a state dict:
 * a global or callable that is not on the allow-list. Nothing was executed.
 */
export class UnsafePickleError extends WeightsFormatError {
  /** What was refused, e.g. "os.system" or "opcode INST". */
  readonly refused: string;
  constructor(file: string, refused: string) {
    super(file, `refused to load: the pickle asks for ${refused}, which a PyTorch state dict never needs (nothing was executed)`);
    this.refused = refused;
  }
}

/**
 * A tensor the model needs is absent from the checkpoint, or has the wrong shape or dtype. The
 * engine's (and `WeightMismatchError.expected`'s) also say what was expected and what came.
 */
export class WeightMismatchError extends PerceiverError {
  readonly weight: string;
  readonly expected?: string;
  readonly actual?: string;
  constructor(weight: string, message: string, detail?: { expected: string; actual: string }) {
    super('ERR_PERCEIVER_WEIGHT_MISMATCH', `weight "${weight}": ${message}`);
    this.weight = weight;
    if (detail) {
      this.expected = detail.expected;
      this.actual = detail.actual;
    }
  }

  /** weight "<weight>": expected <expected> but received <actual> (the engine's wording, native/src/core/engine_error.cc). */
  static expected(weight: string, expected: string, actual: string): WeightMismatchError {
    return new WeightMismatchError(weight, `expected ${expected} but received ${actual}`, { expected, actual });
  }
}

/** config.json is missing, not JSON, or describes something this library cannot build. */
export class ConfigError extends PerceiverError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_PERCEIVER_CONFIG', message, options);
  }
}

/** A method was called on an object after dispose(). */
export class DisposedError extends PerceiverError {
  constructor(what: string) {
    super('ERR_PERCEIVER_DISPOSED', `${what} has been disposed and cannot be used any more`);
  }
}

/** The requested device or dtype cannot be used in this process; the message says what to do. */
export class BackendUnavailableError extends PerceiverError {
  constructor(message: string) {
    super('ERR_PERCEIVER_BACKEND_UNAVAILABLE', message);
  }
}

/**
 * A feature needs an optional package that is not installed (the library's core installs without
 * the service and batch stacks). Names the package, the feature and the command that installs it.
 */
export class MissingDependencyError extends PerceiverError {
  readonly packageName: string;
  readonly feature: string;
  readonly install: string;
  constructor(packageName: string, feature: string, install: string, options?: { cause?: unknown }) {
    super('ERR_PERCEIVER_MISSING_DEPENDENCY', `${feature} needs the "${packageName}" package, which is not installed. Run \`${install}\`.`, options);
    this.packageName = packageName;
    this.feature = feature;
    this.install = install;
  }
}

/** The device ran out of memory. The model stays usable; retry with a smaller batch. */
export class OutOfMemoryError extends PerceiverError {
  constructor(message: string) {
    super('ERR_PERCEIVER_OUT_OF_MEMORY', message);
  }
}

/** The native addon could not be loaded; the message lists every place tried and how to fix it. */
export class NativeLoadError extends PerceiverError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_PERCEIVER_NATIVE_LOAD', message, options);
  }
}

/**
 * A media file (text, image, audio or video) is missing, unreadable, corrupt, too large or empty:
 * it could not be turned into model inputs. Names the file and why.
 */
export class MediaDecodeError extends PerceiverError {
  /** The file path, or a description of the bytes when no file was involved. */
  readonly file: string;
  /** Why, without the file name. */
  readonly reason: string;
  constructor(file: string, reason: string, options?: { cause?: unknown }) {
    super('ERR_PERCEIVER_MEDIA_DECODE', `cannot decode ${file}: ${reason}`, options);
    this.file = file;
    this.reason = reason;
  }
}

/** Redis cannot be reached, answered with an error, or the connection was lost for good. */
export class QueueUnavailableError extends PerceiverError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_PERCEIVER_QUEUE_UNAVAILABLE', message, options);
  }
}

/** Shards of a queued job failed after all their attempts (or were removed from the queue). */
export class ShardsFailedError extends PerceiverError {
  readonly failedShards: { jobId: string; reason: string }[];
  constructor(failedShards: { jobId: string; reason: string }[], total: number) {
    const first = failedShards[0]!;
    super(
      'ERR_PERCEIVER_SHARDS_FAILED',
      `${failedShards.length} of ${total} shards failed permanently (first: ${first.jobId}: ${first.reason}); fix the cause and run the same command again to retry them`,
    );
    this.failedShards = failedShards;
  }
}

/**
 * Another run holds the output folder (a lock file in it names its process, host and start time),
 * or holds a part of it that overlaps this run's (an unsharded run against a shard, shards of
 * different counts). Two writers of one folder would write every item twice.
 */
export class OutputLockedError extends PerceiverError {
  readonly outDir: string;
  /** The lock file of the run that holds the folder. */
  readonly lockFile: string;
  /** What the lock file says about its holder: pid, host, start time, scope. */
  readonly holder: { pid: number; host: string; started: string; scope: string };
  constructor(outDir: string, lockFile: string, holder: OutputLockedError['holder'], message: string) {
    super('ERR_PERCEIVER_OUTPUT_LOCKED', message);
    this.outDir = outDir;
    this.lockFile = lockFile;
    this.holder = holder;
  }
}

/**
 * An output folder holds rows of another model (another checkpoint, even of the same width) than
 * the run that would add to it: resuming would silently mix the two models' embeddings.
 */
export class ModelMismatchError extends PerceiverError {
  readonly outDir: string;
  /** The identity and source of the model already in the folder, and the part that says so. */
  readonly existing: { id: string; source: string; file: string };
  /** The identity and source of this run's model. */
  readonly requested: { id: string; source: string };
  constructor(outDir: string, existing: ModelMismatchError['existing'], requested: ModelMismatchError['requested']) {
    super(
      'ERR_PERCEIVER_MODEL_MISMATCH',
      `${outDir} already holds output of the model ${existing.source} (${existing.id.slice(0, 23)}, in ${existing.file}), not of ${requested.source} (${requested.id.slice(0, 23)}): ` +
        'use another output folder, or the same model to resume',
    );
    this.outDir = outDir;
    this.existing = existing;
    this.requested = requested;
  }
}

/** A queued job names a path outside the roots its worker was allowed (`perceiver-io worker --allow-root DIR`). */
export class PathNotAllowedError extends PerceiverError {
  /** Which path of the job: 'model', 'outDir' or 'items[i].path'. */
  readonly field: string;
  readonly path: string;
  readonly allowedRoots: string[];
  constructor(field: string, path: string, allowedRoots: string[]) {
    super('ERR_PERCEIVER_PATH_NOT_ALLOWED', `the job's ${field} ${JSON.stringify(path)} is outside this worker's allowed roots (${allowedRoots.join(', ')}); start the worker with --allow-root covering it if it is trusted`);
    this.field = field;
    this.path = path;
    this.allowedRoots = allowedRoots;
  }
}

/**
 * A file or folder the library was asked to write could not be written: the path is a folder (or
 * a file where a folder is needed), its parent is missing, permission is denied, the disk is full.
 * Names the path; the file-system error is the cause.
 */
export class FileWriteError extends PerceiverError {
  readonly path: string;
  /** The file-system error code (EISDIR, ENOENT, EACCES...), when there is one. */
  readonly reason: string;
  constructor(path: string, cause: unknown) {
    const code = errorCode(cause);
    const detail = cause instanceof Error ? cause.message : describeValue(cause);
    super('ERR_PERCEIVER_FILE_WRITE', `cannot write ${path}${code ? ` (${code})` : ''}: ${detail}`, { cause });
    this.path = path;
    this.reason = code ?? detail;
  }
}

function errorCode(error: unknown): string | undefined {
  const code = error instanceof Error ? (error as NodeJS.ErrnoException).code : undefined;
  return typeof code === 'string' ? code : undefined;
}

/** Something failed inside the native engine that is not the caller's fault. */
export class NativeError extends PerceiverError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_PERCEIVER_NATIVE', message, options);
  }
}

/** A short, human description of any value, for error messages. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return value.length > 40 ? `string of length ${value.length}` : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return `${typeof value} ${String(value)}`;
  if (Array.isArray(value)) return `array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) {
    // The built-in tag, not an own `constructor`; a detached DataView's byteLength getter throws.
    const kind = Object.prototype.toString.call(value).slice(8, -1);
    if (value instanceof DataView) {
      try {
        return `DataView of ${value.byteLength} bytes`;
      } catch {
        return 'detached DataView';
      }
    }
    return `${kind} of length ${(value as unknown as { length: number }).length}`;
  }
  if (typeof value === 'function') return 'function';
  // Any value: an own `constructor` property of the caller's may be anything (a symbol, an object).
  const ctor: unknown = (value as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof ctor === 'string' && ctor !== '' && ctor !== 'Object' ? `${ctor} instance` : 'object';
}
