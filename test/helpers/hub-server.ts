/**
 * A local stand-in for the Hugging Face Hub, enough for lib/hub/download.ts:
 *
 *   GET  /api/models/{repo}/revision/{revision}      -> { sha, siblings: [{ rfilename }] }
 *   HEAD|GET /{repo}/resolve/{revision}/{file}        -> the file (x-repo-commit, etag, content-length, Range),
 *                                                        or for "LFS" files a 302 to the CDN carrying
 *                                                        x-linked-etag / x-linked-size / x-repo-commit
 *   HEAD|GET /cdn/{etag}                              -> the blob, on a second port (another origin)
 *
 * ETags are the SHA-256 of the content. Every request is recorded; knobs make it misbehave.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HubRepo {
  files: Record<string, Buffer>;
  /** The commit sha "main" points at (40 hex); default derived from the content. */
  sha?: string;
  /** Files served through a redirect to the CDN, as the Hub does for LFS files. */
  lfs?: string[];
  /** Private: the API and resolve answer 401 unless the right token comes. */
  private?: boolean;
}

export interface RecordedRequest {
  method: string;
  url: string;
  port: number;
  authorization?: string;
  range?: string;
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export class HubServer {
  readonly repos = new Map<string, HubRepo & { sha: string }>();
  readonly requests: RecordedRequest[] = [];
  /** Valid token for private repositories. */
  token = 'hf_test_token';
  /** file name -> bytes: the next GET of its content sends this many bytes then drops the connection (once). */
  readonly cutOnce = new Map<string, number>();
  /** file name -> size announced in HEAD (x-linked-size / content-length) instead of the true one. */
  readonly announceSize = new Map<string, number>();
  /** file names whose content is served with one byte flipped (same size). */
  readonly corrupt = new Set<string>();
  /** file names whose ETag is replaced by this raw header value. */
  readonly etagOverride = new Map<string, string>();
  /** file names the listing has but resolve answers 404 for. */
  readonly missing = new Set<string>();
  /** Answer Range requests with the whole file (200), as some servers do. */
  ignoreRange = false;
  /** old id -> new id: the API and resolve answer a relative 307 to the new id, as the Hub does for renamed repositories. */
  readonly renamed = new Map<string, string>();
  /** When set, the API answers this sha instead of the repo's. */
  shaOverride?: string;
  /** Sees every request first (`cdn`: on the CDN's port); returning true means it answered (or chose never to). */
  intercept?: (req: IncomingMessage, res: ServerResponse, cdn: boolean) => boolean;
  url = '';
  cdnUrl = '';
  private main?: Server;
  private cdn?: Server;
  private blobs = new Map<string, { name: string; data: Buffer }>();

  addRepo(id: string, repo: HubRepo): string {
    const sha = repo.sha ?? createHash('sha1').update(id).update(JSON.stringify(Object.keys(repo.files))).digest('hex');
    this.repos.set(id, { ...repo, sha });
    for (const [name, data] of Object.entries(repo.files)) this.blobs.set(sha256(data), { name, data });
    return sha;
  }

  /** Requests whose path starts with `prefix` (method optional). */
  count(prefix: string, method?: string): number {
    return this.requests.filter((r) => r.url.startsWith(prefix) && (!method || r.method === method)).length;
  }

  async start(): Promise<void> {
    const listen = (server: Server) =>
      new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
    this.main = createServer((req, res) => this.handle(req, res, false));
    this.cdn = createServer((req, res) => this.handle(req, res, true));
    this.url = `http://127.0.0.1:${await listen(this.main)}`;
    this.cdnUrl = `http://127.0.0.1:${await listen(this.cdn)}`;
  }

  async close(): Promise<void> {
    for (const server of [this.main, this.cdn]) {
      if (!server) continue;
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  }

  private handle(req: IncomingMessage, res: ServerResponse, cdn: boolean): void {
    const url = new URL(req.url ?? '/', 'http://x');
    this.requests.push({
      method: req.method ?? '',
      url: url.pathname,
      port: req.socket.localPort ?? 0,
      authorization: req.headers.authorization,
      range: req.headers.range,
    });
    if (this.intercept?.(req, res, cdn)) return;
    const deny = (status: number, code?: string) => {
      res.writeHead(status, code ? { 'x-error-code': code, 'content-type': 'application/json' } : {});
      res.end(req.method === 'HEAD' ? undefined : JSON.stringify({ error: code ?? String(status) }));
    };
    if (cdn) {
      const m = /^\/cdn\/([0-9a-f]{64})$/.exec(url.pathname);
      const blob = m ? this.blobs.get(m[1]) : undefined;
      if (!blob) return deny(404);
      return this.sendContent(req, res, blob.name, blob.data, {});
    }

    for (const [from, to] of this.renamed) {
      for (const prefix of [`/api/models/${from}/`, `/${from}/resolve/`]) {
        if (url.pathname.startsWith(prefix)) {
          res.writeHead(307, { location: prefix.replace(from, to) + url.pathname.slice(prefix.length) });
          return void res.end();
        }
      }
    }
    const api = /^\/api\/models\/(.+)\/revision\/([^/]+)$/.exec(url.pathname);
    if (api) {
      const repo = this.repos.get(api[1]);
      if (!repo) return deny(404, 'RepoNotFound');
      if (repo.private && req.headers.authorization !== `Bearer ${this.token}`) return deny(401, 'RepoNotFound');
      const revision = decodeURIComponent(api[2]);
      if (revision !== 'main' && revision !== repo.sha) return deny(404, 'RevisionNotFound');
      const body = JSON.stringify({
        id: api[1],
        sha: this.shaOverride ?? repo.sha,
        siblings: Object.keys(repo.files).map((rfilename) => ({ rfilename })),
      });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      return void res.end(body);
    }

    const resolve = /^\/(.+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (resolve) {
      const repo = this.repos.get(resolve[1]);
      if (!repo) return deny(404, 'RepoNotFound');
      if (repo.private && req.headers.authorization !== `Bearer ${this.token}`) return deny(401, 'RepoNotFound');
      const revision = decodeURIComponent(resolve[2]);
      if (revision !== 'main' && revision !== repo.sha) return deny(404, 'RevisionNotFound');
      const name = decodeURIComponent(resolve[3]);
      const data = repo.files[name];
      if (!data || this.missing.has(name)) return deny(404, 'EntryNotFound');
      const etag = this.etagOverride.get(name) ?? `"${sha256(data)}"`;
      const size = this.announceSize.get(name) ?? data.length;
      if (repo.lfs?.includes(name)) {
        res.writeHead(302, {
          location: `${this.cdnUrl}/cdn/${sha256(data)}`,
          'x-repo-commit': repo.sha,
          'x-linked-etag': etag,
          'x-linked-size': String(size),
        });
        return void res.end();
      }
      return this.sendContent(req, res, name, data, { 'x-repo-commit': repo.sha, etag }, size);
    }
    deny(404);
  }

  private sendContent(req: IncomingMessage, res: ServerResponse, name: string, original: Buffer, headers: Record<string, string>, announced?: number): void {
    let data = original;
    if (this.corrupt.has(name)) {
      data = Buffer.from(original);
      data[data.length >> 1] ^= 0xff;
    }
    if (!headers.etag) headers.etag = `"${sha256(original)}"`;
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...headers, 'content-length': String(announced ?? this.announceSize.get(name) ?? data.length) });
      return void res.end();
    }
    let start = 0;
    let status = 200;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range && !this.ignoreRange) {
      start = Number(range[1]);
      if (start >= data.length) {
        res.writeHead(416, { 'content-range': `bytes */${data.length}` });
        return void res.end();
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${data.length - 1}/${data.length}`;
    }
    const body = data.subarray(start);
    res.writeHead(status, { ...headers, 'content-length': String(body.length) });
    const cut = this.cutOnce.get(name);
    if (cut !== undefined) {
      this.cutOnce.delete(name);
      res.write(body.subarray(0, cut), () => setTimeout(() => res.destroy(), 20));
      return;
    }
    res.end(body);
  }
}
