/**
 * RegistryClient: the OCI distribution API of one registry host
 * (https://github.com/opencontainers/distribution-spec/blob/main/spec.md): manifests by tag or
 * digest (verified), blobs (existence, ranged fetch, cross-repo mount, monolithic and chunked
 * push that resumes where the registry says it stands), and tag listings that follow `Link`.
 *
 * Every request goes through the shared HTTP layer (src/http/request.ts) and the Authenticator,
 * which answers 401s; every failure is a one-line CakeError naming registry, repository and
 * reference, and the registry's own error code.
 */
import { Readable } from "node:stream";
import { CakeError, isCakeError } from "../errors.js";
import { followPages } from "../http/paginate.js";
import { header, type HttpResponse } from "../http/request.js";
import { DEFAULT_RETRY, RETRYABLE_STATUS, isNetworkError, retryDelay, sleep } from "../http/retry.js";
import { repositoryScope } from "./auth/index.js";
import { urlish } from "./errors.js";
import { REGISTRY_DEFAULTS, type BlobDescriptor, type FetchedBlob, type PushBlobOptions, type PushBlobResult, type RegistryClientOptions } from "./options.js";
import { assertDigest, assertRepository } from "./reference.js";
import { SourceError, findSourceError } from "./source-error.js";
import { fetchBlob, hasBlob, readBlob } from "./blobs.js";
import { getManifest, headManifest, putManifest } from "./manifests.js";
import { RegistryTransport } from "./transport.js";

export {
  MEDIA_TYPE,
  REGISTRY_DEFAULTS,
  type BlobDescriptor,
  type FetchedBlob,
  type PushBlobOptions,
  type PushBlobResult,
  type RegistryClientOptions,
} from "./options.js";

/** The token scope distribution asks for on `GET /v2/_catalog`. */
const CATALOG_SCOPE = "registry:catalog:*";

interface UploadSession {
  location: string;
  minChunk?: number;
}

export class RegistryClient {
  readonly registry: string;
  /** `http(s)://host[:port]` */
  readonly origin: string;
  private readonly transport: RegistryTransport;

  constructor(opts: RegistryClientOptions) {
    this.transport = new RegistryTransport(opts);
    this.registry = this.transport.registry;
    this.origin = this.transport.origin;
  }

  // manifests (manifests.ts)

  /**
   * GET a manifest (OCI manifest or index, docker v2 manifest or list), refusing more than 4 MiB.
   * By digest, the bytes must hash to it; by tag, to the `Docker-Content-Digest` the registry sent.
   */
  getManifest(repo: string, reference: string): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
    return getManifest(this.transport, repo, reference);
  }

  /** HEAD a manifest: its digest, size and media type, or undefined when there is none. */
  headManifest(repo: string, reference: string): Promise<{ digest: string; size: number; mediaType: string } | undefined> {
    return headManifest(this.transport, repo, reference);
  }

  /** PUT a manifest under a tag or its digest; returns its digest (checked against the registry's). */
  putManifest(repo: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    return putManifest(this.transport, repo, reference, bytes, mediaType);
  }

  // -------------------------------------------------------------------------------------------
  // blobs (blobs.ts; a mount or a push is an upload)

  /** HEAD a blob: its size (-1 when the registry does not say), or undefined when it is not there. */
  hasBlob(repo: string, digest: string): Promise<number | undefined> {
    return hasBlob(this.transport, repo, digest);
  }

  /**
   * GET a blob, or the bytes [start, end) of it, maybe from where the registry redirects to;
   * `start` says where the body really begins. The caller owns `body` and verifies what it reads.
   */
  fetchBlob(repo: string, digest: string, range?: { start: number; end?: number }, signal?: AbortSignal): Promise<FetchedBlob> {
    return fetchBlob(this.transport, repo, digest, range, signal);
  }

  /** A small blob (a config, a recipe) read whole and checked against its digest. */
  readBlob(repo: string, digest: string, limit: number): Promise<Buffer> {
    return readBlob(this.transport, repo, digest, limit);
  }

  /**
   * Mounts a blob from another repository of this registry (POST ?mount=&from=). True when the
   * registry did (201); false when it opened an upload instead (202), which is then cancelled.
   */
  async mountBlob(repo: string, digest: string, fromRepo: string): Promise<boolean> {
    const ctx = this.transport.context(repo, digest);
    assertDigest(digest, ctx);
    assertRepository(fromRepo, this.registry);
    const session = await this.startUpload(repo, ctx, { digest, from: fromRepo });
    if (session === "mounted") return true;
    await this.cancelUpload(session.location, repo, ctx);
    return false;
  }

  /**
   * Pushes a blob unless the registry has it: HEAD; then mounts from `mountFrom`; then, up to the
   * monolithic threshold, POST + one streamed PUT; above it, PATCH chunks of `chunkSize` (each
   * held in memory so it can be resent), resuming after a failure from the offset the registry
   * reports with a fresh `open(offset)`, and a final PUT ?digest=.
   */
  async pushBlob(repo: string, desc: BlobDescriptor, open: (start: number) => Readable, opts: PushBlobOptions = {}): Promise<PushBlobResult> {
    const ctx = this.transport.context(repo, desc.digest);
    assertDigest(desc.digest, ctx);
    if (!Number.isSafeInteger(desc.size) || desc.size < 0) throw new CakeError("E_USAGE", `${ctx}: bad blob size ${desc.size}`);
    if ((await this.hasBlob(repo, desc.digest)) !== undefined) return "exists";

    let session: UploadSession | undefined;
    for (const from of opts.mountFrom ?? []) {
      if (from === repo) continue;
      assertRepository(from, this.registry);
      if (session) await this.cancelUpload(session.location, repo, ctx);
      const s = await this.startUpload(repo, ctx, { digest: desc.digest, from });
      if (s === "mounted") return "mounted";
      session = s;
    }
    if (desc.size <= (this.transport.opts.monolithicThreshold ?? REGISTRY_DEFAULTS.monolithicThreshold)) {
      await this.uploadMonolithic(repo, desc, open, opts, ctx, session);
    } else {
      await this.uploadChunked(repo, desc, open, opts, ctx, session);
    }
    return "uploaded";
  }

  // -------------------------------------------------------------------------------------------
  // tags

  /** Tags of a repository, page by page, following `Link: <…>; rel="next"`. */
  async *tags(repo: string, opts: { pageSize?: number } = {}): AsyncGenerator<string> {
    const ctx = this.transport.context(repo);
    assertRepository(repo, this.registry);
    const first = `${this.origin}/v2/${repo}/tags/list${opts.pageSize ? `?n=${opts.pageSize}` : ""}`;
    const read = async (url: string) => {
      const res = await this.transport.sendRead(url, { method: "GET", scopes: this.transport.pullScopes(repo), context: ctx }, REGISTRY_DEFAULTS.tagsPageLimit, "tag list");
      if (res.status !== 200) throw await this.transport.failRead(res, "GET", url, ctx);
      return { page: res.bytes, link: res.headers.link };
    };
    for await (const body of followPages(first, read, { what: `${ctx}: tag listing`, code: "E_REGISTRY" })) {
      let tags: unknown;
      try {
        tags = (JSON.parse(body.toString("utf8")) as { tags?: unknown }).tags;
      } catch {
        throw new CakeError("E_REGISTRY", `${ctx}: tag list is not JSON`);
      }
      if (tags !== null && tags !== undefined && !(Array.isArray(tags) && tags.every((t) => typeof t === "string"))) {
        throw new CakeError("E_REGISTRY", `${ctx}: tag list "tags" is not an array of strings`);
      }
      for (const t of (tags as string[] | null | undefined) ?? []) yield t;
    }
  }

  /**
   * Repositories of the registry, page by page, following `Link` (`GET /v2/_catalog`, distribution's
   * catalog API; not part of the OCI spec, so many registries do not offer it). A registry that
   * answers 404, 401/403 or UNSUPPORTED gets one clear CakeError saying so.
   */
  async *catalog(opts: { pageSize?: number } = {}): AsyncGenerator<string> {
    const ctx = this.registry;
    const first = `${this.origin}/v2/_catalog${opts.pageSize ? `?n=${opts.pageSize}` : ""}`;
    const read = async (url: string) => {
      const res = await this.transport.sendRead(url, { method: "GET", scopes: [CATALOG_SCOPE], context: ctx }, REGISTRY_DEFAULTS.tagsPageLimit, "catalog");
      if (res.status !== 200) {
        const err = await this.transport.failRead(res, "GET", url, ctx);
        const refused = res.status === 401 || res.status === 403;
        const hint = refused ? `; ${await this.transport.describeCredentials()}` : "";
        if (res.status === 404 || refused || err.errors.some((e) => e.code === "UNSUPPORTED")) {
          throw new CakeError(
            refused ? "E_AUTH" : "E_NOT_FOUND",
            `${ctx}: the registry does not ${refused ? "let you list" : "offer a list of"} its repositories (GET /v2/_catalog: HTTP ${res.status}${hint}); ` +
              `name a repository instead (${ctx}/<repository>)`,
            { cause: err },
          );
        }
        throw err;
      }
      return { page: res.bytes, link: res.headers.link };
    };
    for await (const body of followPages(first, read, { what: `${ctx}: catalog`, code: "E_REGISTRY" })) {
      let repos: unknown;
      try {
        repos = (JSON.parse(body.toString("utf8")) as { repositories?: unknown }).repositories;
      } catch {
        throw new CakeError("E_REGISTRY", `${ctx}: catalog is not JSON`);
      }
      if (repos !== null && repos !== undefined && !(Array.isArray(repos) && repos.every((r) => typeof r === "string"))) {
        throw new CakeError("E_REGISTRY", `${ctx}: catalog "repositories" is not an array of strings`);
      }
      for (const r of (repos as string[] | null | undefined) ?? []) yield r;
    }
  }

  async listTags(repo: string): Promise<string[]> {
    const out: string[] = [];
    for await (const t of this.tags(repo)) out.push(t);
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // uploads

  private async startUpload(repo: string, ctx: string, mount?: { digest: string; from: string }): Promise<UploadSession | "mounted"> {
    assertRepository(repo, this.registry);
    let url = `${this.origin}/v2/${repo}/blobs/uploads/`;
    if (mount) url += `?mount=${encodeURIComponent(mount.digest)}&from=${encodeURIComponent(mount.from)}`;
    const scopes = mount ? [...this.transport.pushScopes(repo), repositoryScope(mount.from, "pull")] : this.transport.pushScopes(repo);
    const res = await this.transport.send(url, { method: "POST", body: Buffer.alloc(0), scopes, context: ctx });
    if (mount && res.status === 201) {
      await res.body.dump();
      this.transport.checkDigestHeader(res, mount.digest, ctx, "mounted blob");
      return "mounted";
    }
    if (res.status !== 202) throw await this.transport.fail(res, "POST", url, ctx);
    await res.body.dump();
    const location = header(res.headers, "location");
    if (!location) throw new CakeError("E_REGISTRY", `${ctx}: POST ${urlish(url)} opened an upload without a Location`);
    const session: UploadSession = { location: new URL(location, url).toString() };
    const min = Number(header(res.headers, "oci-chunk-min-length"));
    if (Number.isSafeInteger(min) && min > 0) session.minChunk = min;
    return session;
  }

  private async cancelUpload(location: string, repo: string, ctx: string): Promise<void> {
    try {
      const res = await this.transport.send(location, { method: "DELETE", scopes: this.transport.pushScopes(repo), context: ctx });
      await res.body.dump();
    } catch {
      // an abandoned upload is the registry's to garbage-collect
    }
  }

  /** Where an upload stands: the offset the registry has committed and the URL to continue at. */
  private async uploadStatus(location: string, repo: string, ctx: string): Promise<{ location: string; committed: number } | undefined> {
    const res = await this.transport.send(location, { method: "GET", scopes: this.transport.pushScopes(repo), context: ctx });
    await res.body.dump();
    if (res.status === 404 || res.status === 400) return undefined; // unknown or invalidated: start again
    if (res.status < 200 || res.status >= 300) throw await this.transport.fail(res, "GET", location, ctx);
    // `Range: 0-<last byte>`. "0-0" is what distribution says for an empty upload too: read as 0.
    const m = /^(?:bytes=)?0-(\d+)$/.exec(header(res.headers, "range") ?? "");
    const last = m ? Number(m[1]) : 0;
    const loc = header(res.headers, "location");
    return { location: loc ? new URL(loc, location).toString() : location, committed: last > 0 ? last + 1 : 0 };
  }

  private async uploadMonolithic(
    repo: string,
    desc: BlobDescriptor,
    open: (start: number) => Readable,
    opts: PushBlobOptions,
    ctx: string,
    session: UploadSession | undefined,
  ): Promise<void> {
    const policy = { ...DEFAULT_RETRY, ...this.transport.opts.retry };
    for (let attempt = 1; ; attempt++) {
      opts.signal?.throwIfAborted();
      const s = session ?? (await this.startUploadSession(repo, ctx));
      session = undefined; // a failed attempt leaves the session in an unknown state: next time, a new one
      const url = withDigest(s.location, desc.digest);
      let res: HttpResponse | undefined;
      let error: unknown;
      try {
        res = await this.transport.send(url, {
          method: "PUT",
          headers: { "content-type": "application/octet-stream", "content-length": String(desc.size) },
          body: () => Readable.from(countedSource(open, 0, desc.size, ctx, opts.onProgress)),
          scopes: this.transport.pushScopes(repo),
          context: ctx,
          signal: opts.signal,
          retry: { retries: 0 },
        });
      } catch (err) {
        if (!retryableUploadError(err, opts.signal)) throw asCakeError(err, ctx);
        error = err;
      }
      if (res && res.status >= 200 && res.status < 300) {
        await res.body.dump();
        this.transport.checkDigestHeader(res, desc.digest, ctx, "uploaded blob");
        return;
      }
      if (res && !RETRYABLE_STATUS.has(res.status)) throw await this.transport.fail(res, "PUT", url, ctx);
      if (res) error = await this.transport.fail(res, "PUT", url, ctx);
      if (attempt > policy.retries) throw asCakeError(error, ctx);
      await sleep(retryDelay(attempt, policy, res?.headers["retry-after"]), opts.signal);
    }
  }

  private async startUploadSession(repo: string, ctx: string): Promise<UploadSession> {
    return (await this.startUpload(repo, ctx)) as UploadSession;
  }

  private async uploadChunked(
    repo: string,
    desc: BlobDescriptor,
    open: (start: number) => Readable,
    opts: PushBlobOptions,
    ctx: string,
    session: UploadSession | undefined,
  ): Promise<void> {
    const policy = { ...DEFAULT_RETRY, ...this.transport.opts.retry };
    const s = session ?? (await this.startUploadSession(repo, ctx));
    let location = s.location;
    let chunk = Math.max(opts.chunkSize ?? this.transport.opts.chunkSize ?? REGISTRY_DEFAULTS.chunkSize, s.minChunk ?? 1);
    const floor = Math.min(REGISTRY_DEFAULTS.minChunkSize, chunk);
    let offset = 0;
    let failures = 0;
    let reader = new ChunkReader(openSource(open, 0));
    try {
      while (offset < desc.size) {
        opts.signal?.throwIfAborted();
        const len = Math.min(chunk, desc.size - offset);
        let buf: Buffer | undefined;
        let failure: { error: unknown; tooBig: boolean; retryAfter?: string | string[] } | undefined;
        try {
          buf = await reader.read(len);
        } catch (err) {
          failure = { error: new SourceError(err), tooBig: false };
        }
        if (buf && buf.length < len) {
          throw new CakeError("E_SIZE", `${ctx}: the blob to upload ended after ${offset + buf.length} bytes, expected ${desc.size}`);
        }
        if (buf) {
          let res: HttpResponse | undefined;
          try {
            res = await this.transport.send(location, {
              method: "PATCH",
              headers: {
                "content-type": "application/octet-stream",
                "content-range": `${offset}-${offset + len - 1}`,
                "content-length": String(len),
              },
              body: buf,
              scopes: this.transport.pushScopes(repo),
              context: ctx,
              signal: opts.signal,
              retry: { retries: 0 },
            });
          } catch (err) {
            if (!retryableUploadError(err, opts.signal)) throw asCakeError(err, ctx);
            failure = { error: err, tooBig: false };
          }
          if (res && res.status >= 200 && res.status < 300) {
            await res.body.dump();
            const loc = header(res.headers, "location");
            if (loc) location = new URL(loc, location).toString();
            const min = Number(header(res.headers, "oci-chunk-min-length"));
            if (Number.isSafeInteger(min) && min > chunk) chunk = min;
            offset += len;
            failures = 0;
            opts.onProgress?.(offset);
            continue;
          }
          if (res) {
            const tooBig = res.status === 413 || ((res.status === 400 || res.status === 416) && len > floor);
            const error = await this.transport.fail(res, "PATCH", location, ctx);
            if (!tooBig && res.status !== 416 && !RETRYABLE_STATUS.has(res.status)) throw error;
            failure = { error, tooBig, retryAfter: res.headers["retry-after"] };
          }
        }
        // Something failed: ask the registry where the upload stands and go on from there.
        if (++failures > policy.retries) throw asCakeError(failure!.error, ctx);
        if (!failure!.tooBig) await sleep(retryDelay(failures, policy, failure!.retryAfter), opts.signal);
        const status = await this.uploadStatus(location, repo, ctx);
        let committed: number;
        if (status) {
          location = status.location;
          committed = status.committed;
        } else {
          location = (await this.startUploadSession(repo, ctx)).location;
          committed = 0;
        }
        if (committed > desc.size) {
          throw new CakeError("E_REGISTRY", `${ctx}: the registry reports ${committed} bytes uploaded of a ${desc.size}-byte blob`);
        }
        if (failure!.tooBig && committed === offset) {
          if (chunk <= floor) throw asCakeError(failure!.error, ctx);
          chunk = Math.max(floor, Math.floor(chunk / 2));
        }
        if (buf && committed === offset) {
          reader.unshift(buf); // the same bytes again, no need to reopen
        } else {
          reader.destroy();
          reader = new ChunkReader(openSource(open, committed));
          offset = committed;
          opts.onProgress?.(offset);
        }
      }
      if (!(await reader.atEnd())) {
        throw new CakeError("E_SIZE", `${ctx}: the blob to upload is longer than ${desc.size} bytes`);
      }
    } catch (err) {
      if (err instanceof SourceError) throw asCakeError(err, ctx);
      throw err;
    } finally {
      reader.destroy();
    }

    const url = withDigest(location, desc.digest);
    const res = await this.transport.send(url, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body: Buffer.alloc(0),
      scopes: this.transport.pushScopes(repo),
      context: ctx,
      signal: opts.signal,
    });
    if (res.status < 200 || res.status >= 300) {
      const error = await this.transport.fail(res, "PUT", url, ctx);
      // A retried PUT whose first try went through finds its upload gone but the blob there.
      if (res.status === 404 && (await this.hasBlob(repo, desc.digest)) !== undefined) return;
      throw error;
    }
    await res.body.dump();
    this.transport.checkDigestHeader(res, desc.digest, ctx, "uploaded blob");
  }
}

/** An upload URL with `digest=` added, keeping its query (distribution's `_state`) byte for byte. */
function withDigest(location: string, digest: string): string {
  const hash = location.indexOf("#");
  const base = hash >= 0 ? location.slice(0, hash) : location;
  return `${base}${base.includes("?") ? "&" : "?"}digest=${encodeURIComponent(digest)}`;
}

function retryableUploadError(err: unknown, signal?: AbortSignal): boolean {
  if (signal?.aborted) return false;
  return findSourceError(err) !== undefined || isCakeError(err, "E_NETWORK") || isNetworkError(err);
}

function asCakeError(err: unknown, ctx: string): unknown {
  if (isCakeError(err)) return err;
  const source = findSourceError(err);
  return source ? new CakeError("E_IO", `${ctx}: ${source.message}`, { cause: source.cause }) : err;
}

function openSource(open: (start: number) => Readable, start: number): Readable {
  try {
    return open(start);
  } catch (err) {
    throw new SourceError(err);
  }
}

/** The caller's stream from `start`, counted: exactly `size - start` bytes or an error. */
async function* countedSource(
  open: (start: number) => Readable,
  start: number,
  size: number,
  ctx: string,
  onProgress?: (bytes: number) => void,
): AsyncGenerator<Buffer> {
  const src = openSource(open, start);
  let n = start;
  try {
    for await (const chunk of src) {
      const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
      n += b.length;
      if (n > size) throw new CakeError("E_SIZE", `${ctx}: the blob to upload is longer than ${size} bytes`);
      yield b;
      onProgress?.(n);
    }
  } catch (err) {
    if (isCakeError(err)) throw err;
    throw new SourceError(err);
  } finally {
    src.destroy();
  }
  if (n !== size) throw new CakeError("E_SIZE", `${ctx}: the blob to upload ended after ${n} bytes, expected ${size}`);
}

/** Reads a stream in pieces of exactly n bytes (fewer only at its end); a piece can be pushed back. */
class ChunkReader {
  private readonly stream: Readable;
  private readonly it: AsyncIterator<unknown>;
  private parts: Buffer[] = [];
  private have = 0;
  private ended = false;

  constructor(stream: Readable) {
    this.stream = stream;
    this.it = stream[Symbol.asyncIterator]();
  }

  async read(n: number): Promise<Buffer> {
    while (this.have < n && !this.ended) {
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        break;
      }
      const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as Uint8Array);
      this.parts.push(b);
      this.have += b.length;
    }
    // Views, not copies: neither piece is written to, and a copy of every byte costs the CPU the
    // registry (often on the same machine) needs.
    const all = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    const out = all.subarray(0, Math.min(n, all.length));
    const rest = all.subarray(out.length);
    this.parts = rest.length > 0 ? [rest] : [];
    this.have = rest.length;
    return out;
  }

  unshift(buf: Buffer): void {
    this.parts.unshift(buf);
    this.have += buf.length;
  }

  async atEnd(): Promise<boolean> {
    const b = await this.read(1);
    if (b.length === 0) return true;
    this.unshift(b);
    return false;
  }

  destroy(): void {
    this.stream.destroy();
  }
}