/**
 * Downloading Perceiver checkpoints from the Hugging Face Hub into the cache layout that
 * huggingface_hub (Python) uses, so the two share one cache:
 *
 *   {cache}/models--{org}--{name}/blobs/{etag}                       file contents, named by ETag
 *   {cache}/models--{org}--{name}/snapshots/{commit}/{filename}      relative symlink to ../../blobs/{etag}
 *   {cache}/models--{org}--{name}/refs/{revision}                    the commit sha the revision pointed at
 *
 * The cache is `options.cacheDir`, else $HF_HUB_CACHE, else $HF_HOME/hub, else
 * $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. The endpoint is `options.endpoint`,
 * else $HF_ENDPOINT, else https://huggingface.co. The token is `options.token`, else $HF_TOKEN
 * (or the legacy $HUGGING_FACE_HUB_TOKEN), else the file `huggingface-cli login` writes
 * ($HF_TOKEN_PATH, else $HF_HOME/token); it is sent as `Authorization: Bearer` to the endpoint's
 * origin only, never after a redirect to another host.
 *
 * Protocol: `GET {endpoint}/api/models/{repo}/revision/{revision}` gives the commit sha and the file
 * list; each needed file is then asked for by commit (so every file comes from the same commit even
 * if the branch moves meanwhile) with `HEAD {endpoint}/{repo}/resolve/{commit}/{file}`, which gives
 * the ETag (`x-linked-etag` for LFS files), the size (`x-linked-size` or `content-length`) and,
 * often, a redirect to a CDN; the file is then fetched with GET. Only what a Perceiver checkpoint
 * needs is fetched: config.json, preprocessor_config.json (when the repository has one) and the
 * weights, by the preference transformers has (model.safetensors.index.json and its shards,
 * model.safetensors, pytorch_model.bin.index.json and its shards, pytorch_model.bin).
 *
 * Downloads are written to `blobs/{etag}.incomplete` and resumed with `Range: bytes=N-` when a
 * later call finds a partial file; the size is checked against what the Hub announced (and the
 * SHA-256 when the ETag is one, as it is for LFS files), then the file is renamed into place. A
 * lock file per blob keeps concurrent processes from writing the same blob. Everything the server
 * says that becomes a path (commit sha, ETag, shard names) is validated first.
 *
 * Every request has a deadline: the revision lookup and each HEAD must be answered in whole within
 * `timeoutMs` ($HF_HUB_ETAG_TIMEOUT), a download is stopped when nothing arrives for
 * `downloadIdleTimeoutMs` ($HF_HUB_DOWNLOAD_TIMEOUT) or when it runs past `downloadTimeoutMs` (what
 * arrived is kept for the next call to resume). An answer parsed in memory (the lookup's JSON) is
 * read with a cap of MAX_HUB_JSON_BYTES, and a JSON file (config, preprocessor config, index)
 * announced larger than its cap is refused before it is downloaded.
 *
 * Offline ($HF_HUB_OFFLINE=1 or `offline: true`) nothing is requested: `refs/{revision}` names the
 * snapshot, which is returned when it holds a whole checkpoint. Online, when the Hub cannot be
 * reached at all (not when it answers with an error), a whole cached snapshot is used likewise.
 */
import { createHash } from 'node:crypto';
import { constants, createReadStream, existsSync, readFileSync, promises as fsp } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { InvalidArgumentError, PerceiverError, describeValue } from '../errors.js';
import { MAX_JSON_FILE_BYTES } from '../io/read_json.js';
import { tempPathFor, writeFileAtomic } from '../io/temp_file.js';

/** A download from the Hugging Face Hub failed: not found, not authorised, unreachable, corrupt or offline. */
export class HubError extends PerceiverError {
  /** The HTTP status the Hub answered with, when it answered. */
  readonly status?: number;
  constructor(message: string, options?: { status?: number; cause?: unknown }) {
    super('ERR_PERCEIVER_HUB', message, options && 'cause' in options ? { cause: options.cause } : undefined);
    if (options?.status !== undefined) this.status = options.status;
  }
}

export interface HubProgressEvent {
  /** The file name inside the repository, e.g. "model.safetensors". */
  file: string;
  /** Bytes on disk so far, counting what an earlier, interrupted download left. */
  received: number;
  /** The size of the whole file. */
  total: number;
}

export interface HubOptions {
  /** Branch, tag or commit sha; default "main" (or the "@revision" of the id). */
  revision?: string;
  /** The hub cache folder (the one holding models--org--name); default as described above. */
  cacheDir?: string;
  /** The Hub's base URL; default $HF_ENDPOINT or https://huggingface.co. */
  endpoint?: string;
  /** A Hugging Face access token; default $HF_TOKEN, then the saved login. An empty string sends none. */
  token?: string;
  /** Use only the cache; default from $HF_HUB_OFFLINE. */
  offline?: boolean;
  /** true: one updating line per file on stderr, only when stderr is a TTY. A function receives every update instead. */
  progress?: boolean | ((event: HubProgressEvent) => void);
  /**
   * Milliseconds a metadata request (the revision lookup, each file's HEAD) may take, its answer
   * included; default $HF_HUB_ETAG_TIMEOUT seconds (as huggingface_hub), else 10 s.
   */
  timeoutMs?: number;
  /**
   * Milliseconds a file download may wait for the server to answer or to send more bytes; default
   * $HF_HUB_DOWNLOAD_TIMEOUT seconds (as huggingface_hub), else 10 s.
   */
  downloadIdleTimeoutMs?: number;
  /** Milliseconds one file download may take in all; default 1 hour. What arrived is kept, and a later call resumes it. */
  downloadTimeoutMs?: number;
}

// ---------------------------------------------------------------------------------------------
// Names: repository ids, revisions, file names, and what the server sends that becomes a path.

const REPO_SEGMENT = /^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$/;
const MAX_REPO_ID = 96;
const MAX_REVISION = 255;

/** "org/name" or "name" as the Hub allows them: letters, digits, "-", "_", "."; no "--" or ".." (which would make cache folder names ambiguous). */
function isValidRepoId(id: string): boolean {
  if (id.length === 0 || id.length > MAX_REPO_ID) return false;
  const parts = id.split('/');
  if (parts.length > 2) return false;
  return parts.every((p) => REPO_SEGMENT.test(p) && !p.includes('--') && !p.includes('..'));
}

/**
 * A branch, tag or commit, as git allows a ref name, restricted further to the characters that
 * are safe in a URL and as a path under refs/: segments separated by "/", none empty, none starting
 * with ".", none ending with ".lock", no "..".
 */
function isValidRevision(revision: string): boolean {
  if (revision.length === 0 || revision.length > MAX_REVISION) return false;
  if (!/^[A-Za-z0-9._+\-/]+$/.test(revision) || revision.includes('..')) return false;
  return revision.split('/').every((s) => s !== '' && !s.startsWith('.') && !s.endsWith('.lock'));
}

/** A file name with no directory part: no separators of either platform, no drive or stream colon, not "." or "..". */
function isPlainFileName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && name.length <= 255 && !/[/\\:\0]/.test(name);
}

const COMMIT_SHA = /^[0-9a-f]{40}$/;
const ETAG = /^[A-Za-z0-9_-]{1,128}$/;
const SHA256 = /^[0-9a-f]{64}$/;

/** Splits "org/name@revision"; returns undefined when either part is not valid. */
function parseHubId(value: string): { repoId: string; revision?: string } | undefined {
  const at = value.indexOf('@');
  const repoId = at < 0 ? value : value.slice(0, at);
  const revision = at < 0 ? undefined : value.slice(at + 1);
  if (!isValidRepoId(repoId)) return undefined;
  if (revision !== undefined && !isValidRevision(revision)) return undefined;
  return { repoId, revision };
}

/**
 * True when `value` reads as a Hub id ("org/name" or "name", optionally "@revision") and nothing
 * exists at that path on disk: a local folder always wins.
 */
export function isHubId(value: string): boolean {
  if (typeof value !== 'string' || value.length === 0) return false;
  if (existsSync(value)) return false;
  return parseHubId(value) !== undefined;
}

// ---------------------------------------------------------------------------------------------
// Settings from options and the environment.

function envFlag(name: string): boolean {
  const value = process.env[name]?.trim().toUpperCase();
  return value === '1' || value === 'ON' || value === 'YES' || value === 'TRUE';
}

function env(name: string): string | undefined {
  const value = process.env[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

function expandHome(path: string): string {
  return path === '~' || path.startsWith('~/') ? join(homedir(), path.slice(1)) : path;
}

function hfHome(): string {
  const home = env('HF_HOME');
  if (home) return expandHome(home);
  return join(expandHome(env('XDG_CACHE_HOME') ?? join(homedir(), '.cache')), 'huggingface');
}

/** The hub cache folder that huggingface_hub would use with the current environment. */
export function defaultHubCacheDir(): string {
  const cache = env('HF_HUB_CACHE');
  return cache ? expandHome(cache) : join(hfHome(), 'hub');
}

function defaultToken(): string | undefined {
  const fromEnv = env('HF_TOKEN') ?? env('HUGGING_FACE_HUB_TOKEN');
  if (fromEnv) return fromEnv;
  try {
    const saved = readFileSync(expandHome(env('HF_TOKEN_PATH') ?? join(hfHome(), 'token')), 'utf8').trim();
    return saved === '' ? undefined : saved;
  } catch {
    return undefined;
  }
}

/** Default of timeoutMs and downloadIdleTimeoutMs: huggingface_hub's default for both (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT). */
const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_DOWNLOAD_TIMEOUT_MS = 60 * 60_000;
/** setTimeout's largest delay. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
/**
 * Largest answer parsed in memory (the revision lookup's JSON, index files): the Hub's answer for
 * a repository of ten thousand files is about 1 MB.
 */
export const MAX_HUB_JSON_BYTES = 16 * 1024 * 1024;

/** A timeout in ms from the option, else from the environment variable (in seconds), else the default. */
function timeout(option: unknown, optionName: string, envName: string | undefined, fallback: number): number {
  if (option !== undefined) {
    if (typeof option !== 'number' || !(option > 0 && option <= MAX_TIMEOUT_MS)) throw new InvalidArgumentError(optionName, `a number of milliseconds in (0, ${MAX_TIMEOUT_MS}]`, option);
    return option;
  }
  const raw = envName === undefined ? undefined : env(envName);
  if (raw === undefined) return fallback;
  const seconds = Number(raw);
  if (!(seconds > 0 && seconds * 1000 <= MAX_TIMEOUT_MS)) throw new InvalidArgumentError(envName!, `a number of seconds in (0, ${Math.floor(MAX_TIMEOUT_MS / 1000)}]`, raw);
  return seconds * 1000;
}

interface Settings {
  repoId: string;
  revision: string;
  endpoint: string;
  origin: string;
  token?: string;
  offline: boolean;
  repoDir: string;
  progress?: boolean | ((event: HubProgressEvent) => void);
  timeoutMs: number;
  downloadIdleTimeoutMs: number;
  downloadTimeoutMs: number;
}

function settings(repoIdArg: unknown, options: HubOptions): Settings {
  if (typeof repoIdArg !== 'string') throw new InvalidArgumentError('repoId', 'a Hugging Face Hub id such as "deepmind/vision-perceiver-fourier"', repoIdArg);
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an object', options);
  const parsed = parseHubId(repoIdArg);
  if (!parsed) {
    throw new InvalidArgumentError(
      'repoId',
      'a Hugging Face Hub id "org/name" or "name" (letters, digits, "-", "_", "."; no "--" or ".."), optionally followed by "@revision"',
      repoIdArg,
    );
  }
  if (options.revision !== undefined && (typeof options.revision !== 'string' || !isValidRevision(options.revision))) {
    throw new InvalidArgumentError('options.revision', 'a branch, tag or commit sha (letters, digits, ".", "_", "-", "+", "/"; no "..")', options.revision);
  }
  if (parsed.revision !== undefined && options.revision !== undefined && parsed.revision !== options.revision) {
    throw new InvalidArgumentError('options.revision', `the revision the id names ("${parsed.revision}") or none`, options.revision);
  }
  const revision = options.revision ?? parsed.revision ?? 'main';

  const endpointRaw = options.endpoint ?? env('HF_ENDPOINT') ?? 'https://huggingface.co';
  let url: URL | undefined;
  try {
    url = typeof endpointRaw === 'string' ? new URL(endpointRaw) : undefined;
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:') || url.username || url.password || url.search || url.hash) {
    throw new InvalidArgumentError(options.endpoint !== undefined ? 'options.endpoint' : 'HF_ENDPOINT', 'an http(s) URL such as https://huggingface.co', endpointRaw);
  }
  const endpoint = url.href.replace(/\/+$/, '');

  if (options.cacheDir !== undefined && (typeof options.cacheDir !== 'string' || options.cacheDir === '')) {
    throw new InvalidArgumentError('options.cacheDir', 'a folder path', options.cacheDir);
  }
  if (options.token !== undefined && typeof options.token !== 'string') throw new InvalidArgumentError('options.token', 'a string', options.token);
  if (options.token !== undefined && /[\r\n]/.test(options.token)) throw new InvalidArgumentError('options.token', 'a token on one line', 'a string with a line break');
  if (options.offline !== undefined && typeof options.offline !== 'boolean') throw new InvalidArgumentError('options.offline', 'a boolean', options.offline);
  if (options.progress !== undefined && typeof options.progress !== 'boolean' && typeof options.progress !== 'function') {
    throw new InvalidArgumentError('options.progress', 'a boolean or a function', options.progress);
  }
  const cacheDir = options.cacheDir !== undefined ? expandHome(options.cacheDir) : defaultHubCacheDir();
  const token = options.token !== undefined ? options.token || undefined : defaultToken();
  return {
    repoId: parsed.repoId,
    revision,
    endpoint,
    origin: url.origin,
    token: token && !/[\r\n]/.test(token) ? token : undefined,
    offline: options.offline ?? envFlag('HF_HUB_OFFLINE'),
    repoDir: join(cacheDir, `models--${parsed.repoId.split('/').join('--')}`),
    progress: options.progress,
    timeoutMs: timeout(options.timeoutMs, 'options.timeoutMs', 'HF_HUB_ETAG_TIMEOUT', DEFAULT_TIMEOUT_MS),
    downloadIdleTimeoutMs: timeout(options.downloadIdleTimeoutMs, 'options.downloadIdleTimeoutMs', 'HF_HUB_DOWNLOAD_TIMEOUT', DEFAULT_TIMEOUT_MS),
    downloadTimeoutMs: timeout(options.downloadTimeoutMs, 'options.downloadTimeoutMs', undefined, DEFAULT_DOWNLOAD_TIMEOUT_MS),
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/** The errors raised because no answer came at all (as opposed to an answer that says no). */
const unreachable = new WeakSet<HubError>();

const USER_AGENT = `perceiver-io; node/${process.versions.node}`;
const MAX_REDIRECTS = 10;

function causeText(err: unknown): string {
  const cause = (err as { cause?: unknown })?.cause ?? err;
  const code = (cause as NodeJS.ErrnoException)?.code;
  const message = cause instanceof Error ? cause.message : String(cause);
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

function hubHint(s: Settings): string {
  return s.endpoint === 'https://huggingface.co' ? '' : ` (endpoint ${s.endpoint})`;
}

/** What stops a request: its signal, and the error to raise once that signal has fired. */
interface Deadline {
  signal: AbortSignal;
  expired(): HubError;
}

/** A timeout counts as no answer at all: a whole cached snapshot is then used, as for a refused connection. */
function noAnswer(error: HubError): HubError {
  unreachable.add(error);
  return error;
}

/** The deadline of one metadata request (the revision lookup, a HEAD), redirects and answer included. */
function metadataDeadline(s: Settings, what: string): Deadline {
  const signal = AbortSignal.timeout(s.timeoutMs);
  return {
    signal,
    expired: () => noAnswer(new HubError(`${what}: no complete answer from the Hub${hubHint(s)} within ${s.timeoutMs} ms (options.timeoutMs, HF_HUB_ETAG_TIMEOUT)`)),
  };
}

/**
 * The deadline of one file download: stopped when the Hub sends nothing for downloadIdleTimeoutMs
 * (call alive() whenever bytes arrive) or when it runs past downloadTimeoutMs. dispose() clears it.
 */
function downloadDeadline(s: Settings, what: string, incomplete: string): Deadline & { alive(): void; dispose(): void } {
  const controller = new AbortController();
  let reason = '';
  const stop = (why: string) => {
    if (controller.signal.aborted) return;
    reason = why;
    controller.abort();
  };
  const total = setTimeout(() => stop(`it took more than ${s.downloadTimeoutMs} ms in all (options.downloadTimeoutMs)`), s.downloadTimeoutMs);
  total.unref();
  let idle: NodeJS.Timeout | undefined;
  const alive = () => {
    clearTimeout(idle);
    idle = setTimeout(() => stop(`the Hub sent nothing for ${s.downloadIdleTimeoutMs} ms (options.downloadIdleTimeoutMs, HF_HUB_DOWNLOAD_TIMEOUT)`), s.downloadIdleTimeoutMs);
    idle.unref();
  };
  alive();
  return {
    signal: controller.signal,
    expired: () => new HubError(`${what}: the download was stopped because ${reason}; what arrived is kept in ${incomplete}, run again to resume`),
    alive,
    dispose: () => {
      clearTimeout(total);
      clearTimeout(idle);
    },
  };
}

/**
 * The whole body of an answer that is parsed in memory, refused past `cap` bytes: by its
 * content-length before reading, else as soon as more arrives (an endless body ends there).
 */
async function readCappedBody(response: Response, cap: number, what: string, deadline: Deadline): Promise<Buffer> {
  const tooLarge = (size: string) => new HubError(`${what}: the Hub's answer is ${size} bytes, more than the ${cap} allowed for it`, { status: response.status });
  const declared = parseSize(response.headers.get('content-length') ?? undefined);
  if (declared !== undefined && declared > cap) {
    await response.body?.cancel().catch(() => {});
    throw tooLarge(String(declared));
  }
  if (!response.body) return Buffer.alloc(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let received = 0;
  let finished = false;
  try {
    for (;;) {
      let chunk: Awaited<ReturnType<typeof reader.read>>;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (deadline.signal.aborted) throw deadline.expired();
        throw noAnswer(new HubError(`${what}: the Hub's answer was cut off after ${received} bytes (${causeText(err)})`, { status: response.status, cause: err }));
      }
      if (chunk.done) {
        finished = true;
        break;
      }
      received += chunk.value.byteLength;
      if (received > cap) throw tooLarge(`more than ${cap}`);
      chunks.push(chunk.value);
    }
  } finally {
    if (!finished) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
  return Buffer.concat(chunks, received);
}

interface Fetched {
  response: Response;
  /** The URL that answered, after redirects. */
  url: string;
  /** Headers of the redirects followed, first first, then the final response's. */
  hops: Headers[];
}

/**
 * A request that follows redirects itself, sending the token only to the endpoint's origin (so it
 * is dropped as soon as a redirect leaves it, e.g. for a CDN).
 */
async function request(
  s: Settings,
  url: string,
  method: 'GET' | 'HEAD',
  what: string,
  deadline: Deadline,
  extra: Record<string, string> = {},
  stopAt?: (redirect: Response) => boolean,
): Promise<Fetched> {
  const hops: Headers[] = [];
  let current = url;
  for (let i = 0; ; i++) {
    const headers: Record<string, string> = { 'user-agent': USER_AGENT, 'accept-encoding': 'identity', ...extra };
    if (s.token && new URL(current).origin === s.origin) headers.authorization = `Bearer ${s.token}`;
    let response: Response;
    try {
      response = await fetch(current, { method, headers, redirect: 'manual', signal: deadline.signal });
    } catch (err) {
      if (deadline.signal.aborted) throw deadline.expired();
      const error = new HubError(`cannot reach the Hugging Face Hub at ${new URL(current).origin} for ${what}: ${causeText(err)}`, { cause: err });
      unreachable.add(error);
      throw error;
    }
    hops.push(response.headers);
    const location = response.headers.get('location');
    if (response.status >= 300 && response.status < 400 && response.status !== 304 && location) {
      await response.body?.cancel().catch(() => {});
      if (stopAt?.(response)) return { response, url: current, hops };
      if (i >= MAX_REDIRECTS) throw new HubError(`${what}: more than ${MAX_REDIRECTS} redirects`, { status: response.status });
      let next: URL;
      try {
        next = new URL(location, current);
      } catch (err) {
        throw new HubError(`${what}: the Hub redirected to an invalid URL`, { status: response.status, cause: err });
      }
      if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new HubError(`${what}: the Hub redirected to a ${next.protocol} URL`, { status: response.status });
      current = next.href;
      continue;
    }
    return { response, url: current, hops };
  }
}

/** Turns a non-2xx answer into a HubError that says what to do. */
async function failure(s: Settings, response: Response, what: string, kind: 'revision' | 'file', file?: string): Promise<HubError> {
  const status = response.status;
  const errorCode = response.headers.get('x-error-code') ?? '';
  const serverMessage = response.headers.get('x-error-message');
  await response.body?.cancel().catch(() => {});
  const detail = serverMessage ? ` (the Hub says: ${serverMessage.slice(0, 300)})` : '';
  const repo = `"${s.repoId}"`;
  if (status === 401 || status === 403) {
    const gated = errorCode === 'GatedRepo' || status === 403;
    const advice = s.token
      ? 'the token in use (options.token, HF_TOKEN or the saved login) has no access to it: check the token, or accept the repository\'s conditions on the Hub'
      : 'if it is private or gated, set HF_TOKEN to an access token with read access (https://huggingface.co/settings/tokens) or pass options.token';
    return new HubError(
      `${what}: the Hub answered ${status}: repository ${repo}${hubHint(s)} ${gated ? 'is gated or private' : 'is private, gated or does not exist'}; ${advice}${detail}`,
      { status },
    );
  }
  if (status === 404) {
    let message: string;
    if (errorCode === 'RevisionNotFound') message = `no revision "${s.revision}" in repository ${repo}`;
    else if (errorCode === 'RepoNotFound') message = `no repository ${repo} on the Hub${hubHint(s)} (and no local folder of that name)`;
    else if (kind === 'file') message = `no file "${file}" in repository ${repo} at revision "${s.revision}"`;
    else message = `no repository ${repo} with revision "${s.revision}" on the Hub${hubHint(s)} (and no local folder of that name)`;
    return new HubError(`${message}${detail}`, { status });
  }
  return new HubError(`${what}: the Hub answered HTTP ${status} ${response.statusText}${detail}`.trimEnd(), { status });
}

function repoUrl(s: Settings): string {
  return `${s.endpoint}/api/models/${s.repoId}/revision/${encodeURIComponent(s.revision)}`;
}

function fileUrl(s: Settings, commit: string, file: string): string {
  return `${s.endpoint}/${s.repoId}/resolve/${commit}/${file.split('/').map(encodeURIComponent).join('/')}`;
}

interface RepoInfo {
  sha: string;
  files: Set<string>;
}

async function fetchRepoInfo(s: Settings): Promise<RepoInfo> {
  const what = `looking up ${s.repoId}@${s.revision}`;
  const deadline = metadataDeadline(s, what);
  const { response } = await request(s, repoUrl(s), 'GET', what, deadline, { accept: 'application/json' });
  if (!response.ok) throw await failure(s, response, what, 'revision');
  const bytes = await readCappedBody(response, MAX_HUB_JSON_BYTES, what, deadline);
  let body: unknown;
  try {
    body = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new HubError(`${what}: the Hub's answer is not JSON: ${causeText(err)}`, { status: response.status, cause: err });
  }
  const info = body as { sha?: unknown; siblings?: unknown };
  if (typeof info !== 'object' || info === null || typeof info.sha !== 'string' || !COMMIT_SHA.test(info.sha)) {
    throw new HubError(`${what}: the Hub's answer has no valid commit "sha" (got ${describeValue((info as { sha?: unknown })?.sha)})`);
  }
  if (!Array.isArray(info.siblings)) throw new HubError(`${what}: the Hub's answer has no "siblings" list of files`);
  const files = new Set<string>();
  for (const sibling of info.siblings) {
    const name = (sibling as { rfilename?: unknown })?.rfilename;
    if (typeof name !== 'string') throw new HubError(`${what}: the Hub's "siblings" list holds ${describeValue(sibling)} where a {rfilename} was expected`);
    files.add(name);
  }
  return { sha: info.sha, files };
}

interface FileMeta {
  etag: string;
  size: number;
  /** Where the content is, after the resolve URL's redirects. */
  url: string;
}

function header(hops: Headers[], name: string): string | undefined {
  for (const h of hops) {
    const value = h.get(name);
    if (value !== null) return value;
  }
  return undefined;
}

function normalizeEtag(raw: string): string {
  return raw.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

function parseSize(raw: string | undefined): number | undefined {
  if (raw === undefined || !/^\d{1,16}$/.test(raw.trim())) return undefined;
  const n = Number(raw.trim());
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * The file's ETag, size and content URL. As huggingface_hub does, a redirect that carries
 * x-linked-etag and x-linked-size (the Hub's answer for LFS files, pointing at a CDN whose signed
 * URL may not allow HEAD) is not followed: its Location is where the GET goes. Other redirects
 * (a renamed repository, a mirror) are followed.
 */
async function fetchFileMeta(s: Settings, commit: string, file: string): Promise<FileMeta> {
  const what = `${s.repoId}/${file}`;
  const linked = (r: Response) => r.headers.has('x-linked-etag') && r.headers.has('x-linked-size');
  const fetched = await request(s, fileUrl(s, commit, file), 'HEAD', what, metadataDeadline(s, what), {}, linked);
  const { response, hops } = fetched;
  let url = fetched.url;
  if (response.status >= 300 && response.status < 400) {
    url = new URL(response.headers.get('location')!, url).href;
  } else if (!response.ok) {
    throw await failure(s, response, what, 'file', file);
  }
  await response.body?.cancel().catch(() => {});
  const repoCommit = header(hops, 'x-repo-commit');
  if (repoCommit !== undefined && repoCommit !== commit) {
    throw new HubError(`${what}: the Hub served commit ${JSON.stringify(repoCommit.slice(0, 64))} where ${commit} was asked for`);
  }
  const rawEtag = header(hops, 'x-linked-etag') ?? (response.ok ? response.headers.get('etag') ?? undefined : undefined);
  if (rawEtag === undefined) throw new HubError(`${what}: the Hub's answer has no ETag; is ${s.endpoint} a Hugging Face Hub?`);
  const etag = normalizeEtag(rawEtag);
  if (!ETAG.test(etag)) throw new HubError(`${what}: the Hub's ETag ${JSON.stringify(rawEtag.slice(0, 140))} is not a plain name usable as a file name`);
  const size = parseSize(header(hops, 'x-linked-size') ?? (response.ok ? response.headers.get('content-length') ?? undefined : undefined));
  if (size === undefined) throw new HubError(`${what}: the Hub did not say the size of the file (no valid x-linked-size or content-length)`);
  return { etag, size, url };
}

// ---------------------------------------------------------------------------------------------
// Files and locks.

async function isFile(path: string): Promise<boolean> {
  try {
    return (await fsp.stat(path)).isFile();
  } catch {
    return false;
  }
}

async function fileSize(path: string): Promise<number | undefined> {
  try {
    return (await fsp.stat(path)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Writes a small file atomically (an exclusive temporary file under a random name, then rename). */
async function writeAtomic(path: string, text: string): Promise<void> {
  await fsp.mkdir(dirname(path), { recursive: true });
  await writeFileAtomic(path, text);
}

/**
 * The partial download `blob.incomplete` (a fixed name, so a later run resumes it), never opened
 * through a link: appended to when resuming, else created exclusively after removing any leftover.
 */
async function openIncomplete(path: string, append: boolean): Promise<fsp.FileHandle> {
  const nofollow = constants.O_NOFOLLOW ?? 0;
  if (append) return fsp.open(path, constants.O_WRONLY | constants.O_APPEND | nofollow);
  await fsp.rm(path, { force: true });
  return fsp.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | nofollow, 0o666);
}

/** Removes `path` unless it is a regular file (a link planted there is removed, not followed). */
async function removeUnlessRegularFile(path: string): Promise<void> {
  const stat = await fsp.lstat(path).catch(() => undefined);
  if (stat && !stat.isFile()) await fsp.rm(path, { force: true, recursive: stat.isDirectory() });
}

/** Points snapshots/{commit}/{file} at the blob: a relative symlink, or a copy where symlinks are not allowed. */
async function linkIntoSnapshot(blob: string, pointer: string): Promise<void> {
  await fsp.mkdir(dirname(pointer), { recursive: true });
  // A random name; symlink() and copyFile(COPYFILE_EXCL) both refuse an existing entry.
  const tmp = tempPathFor(pointer);
  try {
    try {
      await fsp.symlink(relative(dirname(pointer), blob), tmp);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EPERM' && code !== 'EACCES' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
      await fsp.copyFile(blob, tmp, constants.COPYFILE_EXCL);
    }
    await fsp.rename(tmp, pointer);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A lock not refreshed for this long is abandoned (its holder refreshes it every LOCK_REFRESH_MS). */
const STALE_LOCK_MS = 2 * 60_000;
const LOCK_REFRESH_MS = 15_000;
const inProcessLocks = new Map<string, Promise<unknown>>();

/**
 * Runs `fn` holding `lockPath`: in this process through a promise chain, across processes through
 * a file created exclusively that names its owner and whose mtime the owner keeps fresh. A lock
 * whose owner died on this host, or that nobody refreshed for two minutes, is taken over.
 */
async function withLock<T>(lockPath: string, fn: () => Promise<T>): Promise<T> {
  const previous = inProcessLocks.get(lockPath) ?? Promise.resolve();
  const run = previous.catch(() => {}).then(async () => {
    await fsp.mkdir(dirname(lockPath), { recursive: true });
    const host = hostname();
    for (;;) {
      try {
        await fsp.writeFile(lockPath, `${process.pid}@${host}`, { flag: 'wx' });
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      let stale = false;
      try {
        const [text, stat] = await Promise.all([fsp.readFile(lockPath, 'utf8'), fsp.stat(lockPath)]);
        const match = /^(\d+)@(.*)$/.exec(text.trim());
        stale = Date.now() - stat.mtimeMs > STALE_LOCK_MS || (match !== null && match[2] === host && !processAlive(Number(match[1])));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      if (stale) await fsp.rm(lockPath, { force: true });
      else await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const refresh = setInterval(() => {
      const now = new Date();
      fsp.utimes(lockPath, now, now).catch(() => {});
    }, LOCK_REFRESH_MS);
    refresh.unref();
    try {
      return await fn();
    } finally {
      clearInterval(refresh);
      await fsp.rm(lockPath, { force: true });
    }
  });
  inProcessLocks.set(lockPath, run);
  try {
    return await run;
  } finally {
    if (inProcessLocks.get(lockPath) === run) inProcessLocks.delete(lockPath);
  }
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Progress.

interface Progress {
  update(received: number): void;
  done(): void;
}

function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

function makeProgress(option: Settings['progress'], file: string, total: number, start: number): Progress | undefined {
  if (typeof option === 'function') {
    return {
      update: (received) => option({ file, received, total }),
      done: () => {},
    };
  }
  if (option !== true || !process.stderr.isTTY) return undefined;
  const began = Date.now();
  let last = 0;
  let current = start;
  const draw = () => {
    const seconds = (Date.now() - began) / 1000;
    const rate = seconds > 0 ? (current - start) / seconds : 0;
    const percent = total > 0 ? ((current / total) * 100).toFixed(1) : '100.0';
    process.stderr.write(`\r\x1b[2K${file}  ${formatBytes(current)} / ${formatBytes(total)}  ${percent}%  ${formatBytes(Math.round(rate))}/s`);
  };
  return {
    update(received) {
      current = received;
      const now = Date.now();
      if (now - last >= 100 || received === total) {
        last = now;
        draw();
      }
    },
    done() {
      draw();
      process.stderr.write('\n');
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Downloading one blob.

/** Fetches the file into `blob` (resuming `blob.incomplete`), checks its size (and SHA-256), and renames it into place. */
async function downloadBlob(s: Settings, file: string, meta: FileMeta, blob: string): Promise<void> {
  const what = `${s.repoId}/${file}`;
  const incomplete = `${blob}.incomplete`;
  const deadline = downloadDeadline(s, what, incomplete);
  try {
    await fetchBlob(s, file, meta, blob, what, incomplete, deadline);
  } finally {
    deadline.dispose();
  }
}

async function fetchBlob(s: Settings, file: string, meta: FileMeta, blob: string, what: string, incomplete: string, deadline: ReturnType<typeof downloadDeadline>): Promise<void> {
  const discard = async (message: string, status?: number): Promise<never> => {
    await fsp.rm(incomplete, { force: true });
    throw new HubError(`${what}: ${message}; the download was removed, run again to download it afresh`, { status });
  };

  for (let attempt = 0; ; attempt++) {
    await removeUnlessRegularFile(incomplete);
    let start = (await fileSize(incomplete)) ?? 0;
    if (start > meta.size) {
      await fsp.rm(incomplete, { force: true });
      start = 0;
    }
    if (start === meta.size && start > 0) break; // an earlier run got everything but did not rename
    const { response } = await request(s, meta.url, 'GET', what, deadline, start > 0 ? { range: `bytes=${start}-` } : {});
    if (response.status === 416 && start > 0 && attempt === 0) {
      await response.body?.cancel().catch(() => {});
      await fsp.rm(incomplete, { force: true });
      continue; // the server will not resume this file: start over once
    }
    if (!response.ok) throw await failure(s, response, what, 'file', file);
    if (start > 0 && response.status !== 206) {
      start = 0; // the server ignored the Range header and sends everything
    } else if (response.status === 206) {
      const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.headers.get('content-range') ?? '');
      if (!range || Number(range[1]) !== start) {
        await response.body?.cancel().catch(() => {});
        return discard(`the Hub answered a resume from byte ${start} with the range ${JSON.stringify(response.headers.get('content-range'))}`, response.status);
      }
    }
    const length = parseSize(response.headers.get('content-length') ?? undefined);
    if (length !== undefined && start + length !== meta.size) {
      await response.body?.cancel().catch(() => {});
      return discard(`size mismatch: the Hub announced ${meta.size} bytes but sends ${start + length}`, response.status);
    }
    if (!response.body) return discard('the Hub sent no content');

    await fsp.mkdir(dirname(blob), { recursive: true });
    const out = await openIncomplete(incomplete, start > 0);
    const progress = makeProgress(s.progress, file, meta.size, start);
    let received = start;
    const reader = response.body.getReader();
    let finished = false;
    try {
      progress?.update(received);
      for (;;) {
        let chunk: Awaited<ReturnType<typeof reader.read>>;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (deadline.signal.aborted) throw deadline.expired();
          throw new HubError(
            `${what}: the download was interrupted after ${received} of ${meta.size} bytes (${causeText(err)}); ` +
              `run again to resume from ${incomplete}`,
            { cause: err },
          );
        }
        if (chunk.done) {
          finished = true;
          break;
        }
        if (received + chunk.value.byteLength > meta.size) {
          await out.close();
          return discard(`size mismatch: the Hub sends more than the ${meta.size} bytes it announced`);
        }
        deadline.alive();
        await out.write(chunk.value);
        received += chunk.value.byteLength;
        progress?.update(received);
      }
      await out.datasync();
    } finally {
      if (!finished) await reader.cancel().catch(() => {});
      reader.releaseLock();
      await out.close().catch(() => {});
      progress?.done();
    }
    break;
  }

  const size = await fileSize(incomplete);
  if (size !== meta.size) return discard(`size mismatch: got ${size ?? 0} bytes where the Hub announced ${meta.size}`);
  if (SHA256.test(meta.etag)) {
    const digest = await sha256OfFile(incomplete);
    if (digest !== meta.etag) return discard(`checksum mismatch: the SHA-256 of the download is ${digest}, the Hub announced ${meta.etag}`);
  }
  await fsp.rename(incomplete, blob);
}

/**
 * Makes snapshots/{commit}/{file} exist, downloading the blob unless the cache has it. `maxSize`:
 * a file read into memory later (JSON) is refused when the Hub announces more, before downloading.
 */
async function ensureFile(s: Settings, commit: string, file: string, maxSize?: number): Promise<string> {
  const pointer = join(s.repoDir, 'snapshots', commit, file);
  if (await isFile(pointer)) return pointer;
  const meta = await fetchFileMeta(s, commit, file);
  if (maxSize !== undefined && meta.size > maxSize) {
    throw new HubError(`${s.repoId}/${file}: the Hub announces ${meta.size} bytes, more than the ${maxSize} a settings or index file may have`);
  }
  const blob = join(s.repoDir, 'blobs', meta.etag);
  if (!(await isFile(blob))) {
    await withLock(`${blob}.lock`, async () => {
      if (!(await isFile(blob))) await downloadBlob(s, file, meta, blob);
    });
  }
  await linkIntoSnapshot(blob, pointer);
  return pointer;
}

// ---------------------------------------------------------------------------------------------
// Which files a checkpoint needs.

const CONFIG = 'config.json';
const PREPROCESSOR_CONFIG = 'preprocessor_config.json';
const WEIGHT_LAYOUTS = [
  { index: 'model.safetensors.index.json', single: 'model.safetensors' },
  { index: 'pytorch_model.bin.index.json', single: 'pytorch_model.bin' },
];

/** The shard names an index lists, each a plain file name; throws `fail(message)` otherwise. */
function shardsOf(text: string, fail: (message: string) => Error): string[] {
  let index: unknown;
  try {
    index = JSON.parse(text);
  } catch (err) {
    throw fail(`not valid JSON: ${(err as Error).message}`);
  }
  const weightMap = (index as { weight_map?: unknown })?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) throw fail('"weight_map" must be an object');
  const shards = new Set<string>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string' || !isPlainFileName(shard)) {
      throw fail(`weight_map[${JSON.stringify(tensor)}] names ${describeValue(shard)}, which is not a plain file name`);
    }
    shards.add(shard);
  }
  if (shards.size === 0) throw fail('"weight_map" lists no shards');
  return [...shards];
}

/** A small text file (an index) read whole; undefined when it is absent, too large for what it is, or unreadable. */
async function readSmallText(path: string): Promise<string | undefined> {
  try {
    if ((await fsp.stat(path)).size > MAX_HUB_JSON_BYTES) return undefined;
    return await fsp.readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** True when `dir` holds config.json and a whole set of weights. */
async function isCompleteSnapshot(dir: string): Promise<boolean> {
  if (!(await isFile(join(dir, CONFIG)))) return false;
  for (const layout of WEIGHT_LAYOUTS) {
    const text = await readSmallText(join(dir, layout.index));
    if (text !== undefined) {
      let shards: string[];
      try {
        shards = shardsOf(text, (m) => new Error(m));
      } catch {
        return false;
      }
      for (const shard of shards) if (!(await isFile(join(dir, shard)))) return false;
      return true;
    }
    if (await isFile(join(dir, layout.single))) return true;
  }
  return false;
}

/** The cached snapshot for the revision, when it is whole (or, with `configOnly`, when it holds config.json). */
async function cachedSnapshot(s: Settings, configOnly = false): Promise<string | undefined> {
  let commit: string | undefined;
  try {
    commit = (await fsp.readFile(join(s.repoDir, 'refs', s.revision), 'utf8')).trim();
  } catch {
    commit = COMMIT_SHA.test(s.revision) ? s.revision : undefined;
  }
  if (commit === undefined || !COMMIT_SHA.test(commit)) return undefined;
  const dir = join(s.repoDir, 'snapshots', commit);
  return (configOnly ? await isFile(join(dir, CONFIG)) : await isCompleteSnapshot(dir)) ? dir : undefined;
}

/**
 * Only the configuration of a checkpoint on the Hub: config.json, and preprocessor_config.json when
 * the repository has one, into the same cache as snapshotDownload (which later adds the weights to
 * the same snapshot). For what the config alone tells (the head, what it reads, the width) without
 * downloading the weights. Returns the snapshot folder.
 */
export async function configDownload(repoId: string, options: HubOptions = {}): Promise<string> {
  const s = settings(repoId, options);
  if (s.offline) {
    const cached = await cachedSnapshot(s, true);
    if (cached) return cached;
    throw new HubError(`${s.repoId}@${s.revision} has no ${CONFIG} in the cache (${s.repoDir}) and offline mode is on (HF_HUB_OFFLINE or options.offline)`);
  }
  let info: RepoInfo;
  try {
    info = await fetchRepoInfo(s);
  } catch (err) {
    if (err instanceof HubError && unreachable.has(err)) {
      const cached = await cachedSnapshot(s, true);
      if (cached) return cached;
    }
    throw err;
  }
  if (!info.files.has(CONFIG)) throw new HubError(`repository "${s.repoId}" at revision "${s.revision}" has no ${CONFIG}: it is not a transformers checkpoint`);
  await ensureFile(s, info.sha, CONFIG, MAX_JSON_FILE_BYTES);
  if (info.files.has(PREPROCESSOR_CONFIG)) await ensureFile(s, info.sha, PREPROCESSOR_CONFIG, MAX_JSON_FILE_BYTES);
  if (s.revision !== info.sha) await writeAtomic(join(s.repoDir, 'refs', s.revision), info.sha);
  return join(s.repoDir, 'snapshots', info.sha);
}

/**
 * Downloads what a Perceiver checkpoint needs from the Hub repository `repoId` ("org/name",
 * optionally "@revision") into the Hugging Face cache, and returns the snapshot folder, which
 * AutoModel.fromPretrained can load. Files already in the cache are not downloaded again.
 */
export async function snapshotDownload(repoId: string, options: HubOptions = {}): Promise<string> {
  const s = settings(repoId, options);

  if (s.offline) {
    const cached = await cachedSnapshot(s);
    if (cached) return cached;
    throw new HubError(
      `${s.repoId}@${s.revision} is not in the cache (${s.repoDir}) and offline mode is on ` +
        `(HF_HUB_OFFLINE or options.offline): download it once with network access, or turn offline mode off`,
    );
  }

  let info: RepoInfo;
  try {
    info = await fetchRepoInfo(s);
  } catch (err) {
    // Unreachable (no answer at all): a whole cached snapshot will do, as huggingface_hub does.
    if (err instanceof HubError && unreachable.has(err)) {
      const cached = await cachedSnapshot(s);
      if (cached) return cached;
    }
    throw err;
  }

  const has = (name: string) => info.files.has(name);
  if (!has(CONFIG)) throw new HubError(`repository "${s.repoId}" at revision "${s.revision}" has no ${CONFIG}: it is not a transformers checkpoint`);
  const snapshot = join(s.repoDir, 'snapshots', info.sha);

  await ensureFile(s, info.sha, CONFIG, MAX_JSON_FILE_BYTES);
  if (has(PREPROCESSOR_CONFIG)) await ensureFile(s, info.sha, PREPROCESSOR_CONFIG, MAX_JSON_FILE_BYTES);

  let weights = false;
  for (const layout of WEIGHT_LAYOUTS) {
    if (has(layout.index)) {
      const indexPath = await ensureFile(s, info.sha, layout.index, MAX_HUB_JSON_BYTES);
      const text = await readSmallText(indexPath);
      if (text === undefined) throw new HubError(`${s.repoId}/${layout.index}: cannot read ${indexPath}, or it is larger than ${MAX_HUB_JSON_BYTES} bytes`);
      const shards = shardsOf(text, (m) => new HubError(`${s.repoId}/${layout.index}: ${m}`));
      for (const shard of shards) {
        if (!has(shard)) throw new HubError(`${s.repoId}/${layout.index} names shard "${shard}", which the repository does not hold`);
      }
      for (const shard of shards) await ensureFile(s, info.sha, shard);
      weights = true;
      break;
    }
    if (has(layout.single)) {
      await ensureFile(s, info.sha, layout.single);
      weights = true;
      break;
    }
  }
  if (!weights) {
    throw new HubError(
      `repository "${s.repoId}" at revision "${s.revision}" has no weights: expected ${WEIGHT_LAYOUTS.flatMap((l) => [l.index, l.single]).join(', ')}`,
    );
  }

  if (s.revision !== info.sha) await writeAtomic(join(s.repoDir, 'refs', s.revision), info.sha);
  return snapshot;
}

/**
 * A local checkpoint folder (anything that exists on disk) is returned as is; a Hub id is
 * downloaded with snapshotDownload and its snapshot folder returned.
 */
export async function resolveModelPath(model: string, options: HubOptions = {}): Promise<string> {
  if (typeof model !== 'string' || model === '') {
    throw new InvalidArgumentError('model', 'a checkpoint folder or a Hugging Face Hub id such as "deepmind/vision-perceiver-fourier"', model);
  }
  if (existsSync(model)) return model;
  if (!parseHubId(model)) {
    throw new InvalidArgumentError(
      'model',
      'a checkpoint folder or a Hugging Face Hub id such as "deepmind/vision-perceiver-fourier"',
      model,
      `Expected a checkpoint folder or a Hugging Face Hub id such as "deepmind/vision-perceiver-fourier" for model, but there is no folder ${JSON.stringify(model)} and it is not a Hub id`,
    );
  }
  return snapshotDownload(model, options);
}
