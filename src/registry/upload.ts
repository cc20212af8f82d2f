/**
 * Pushing a blob (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-blobs):
 * a cross-repo mount first, then a monolithic POST + PUT, or PATCH chunks that resume from the
 * offset the registry reports and shrink when it refuses their size, and the closing PUT ?digest=.
 */
import { Readable } from "node:stream";
import { CakeError, isCakeError } from "../errors.js";
import { header, type HttpResponse } from "../http/request.js";
import { DEFAULT_RETRY, RETRYABLE_STATUS, isNetworkError, retryDelay, sleep } from "../http/retry.js";
import { repositoryScope } from "./auth/index.js";
import { hasBlob } from "./blobs.js";
import { urlish } from "./errors.js";
import { REGISTRY_DEFAULTS, type BlobDescriptor, type PushBlobOptions, type PushBlobResult } from "./options.js";
import { assertDigest, assertRepository } from "./reference.js";
import { SourceError, findSourceError } from "./source-error.js";
import type { RegistryTransport, SendRequest } from "./transport.js";

interface UploadSession {
  location: string;
  minChunk?: number;
}

/** One blob being pushed: where to, what, the caller's source and options, and the name messages use. */
interface UploadJob {
  t: RegistryTransport;
  repo: string;
  desc: BlobDescriptor;
  open: (start: number) => Readable;
  opts: PushBlobOptions;
  ctx: string;
}

/**
 * Mounts a blob from another repository of this registry (POST ?mount=&from=). True when the
 * registry did (201); false when it opened an upload instead (202), which is then cancelled.
 */
export async function mountBlob(t: RegistryTransport, repo: string, digest: string, fromRepo: string): Promise<boolean> {
  const ctx = t.context(repo, digest);
  assertDigest(digest, ctx);
  assertRepository(fromRepo, t.registry);
  const session = await startUpload(t, repo, ctx, { digest, from: fromRepo });
  if (session === "mounted") return true;
  await cancelUpload(t, session.location, repo, ctx);
  return false;
}

/**
 * Pushes a blob unless the registry has it: HEAD; then mounts from `mountFrom`; then, up to the
 * monolithic threshold, POST + one streamed PUT; above it, PATCH chunks of `chunkSize` (each
 * held in memory so it can be resent), resuming after a failure from the offset the registry
 * reports with a fresh `open(offset)`, and a final PUT ?digest=.
 */
export async function pushBlob(t: RegistryTransport, repo: string, desc: BlobDescriptor, open: (start: number) => Readable, opts: PushBlobOptions = {}): Promise<PushBlobResult> {
  const ctx = t.context(repo, desc.digest);
  assertDigest(desc.digest, ctx);
  if (!Number.isSafeInteger(desc.size) || desc.size < 0) throw new CakeError("E_USAGE", `${ctx}: bad blob size ${desc.size}`);
  if ((await hasBlob(t, repo, desc.digest, opts.signal)) !== undefined) return "exists";

  let session: UploadSession | undefined;
  for (const from of opts.mountFrom ?? []) {
    if (from === repo) continue;
    assertRepository(from, t.registry);
    if (session) await cancelUpload(t, session.location, repo, ctx);
    const s = await startUpload(t, repo, ctx, { digest: desc.digest, from }, opts.signal);
    if (s === "mounted") return "mounted";
    session = s;
  }
  if (desc.size <= (t.opts.monolithicThreshold ?? REGISTRY_DEFAULTS.monolithicThreshold)) {
    await uploadMonolithic({ t, repo, desc, open, opts, ctx }, session);
  } else {
    await uploadChunked({ t, repo, desc, open, opts, ctx }, session);
  }
  return "uploaded";
}

async function startUpload(t: RegistryTransport, repo: string, ctx: string, mount?: { digest: string; from: string }, signal?: AbortSignal): Promise<UploadSession | "mounted"> {
  assertRepository(repo, t.registry);
  let url = t.url(repo, "blobs/uploads/");
  if (mount) url += `?mount=${encodeURIComponent(mount.digest)}&from=${encodeURIComponent(mount.from)}`;
  const scopes = mount ? [...t.pushScopes(repo), repositoryScope(mount.from, "pull")] : t.pushScopes(repo);
  const res = await t.send(url, { method: "POST", body: Buffer.alloc(0), scopes, context: ctx, ...(signal ? { signal } : {}) });
  if (mount && res.status === 201) {
    await res.body.dump();
    t.checkDigestHeader(res, mount.digest, ctx, "mounted blob");
    return "mounted";
  }
  if (res.status !== 202) throw await t.fail(res, "POST", url, ctx);
  await res.body.dump();
  const location = header(res.headers, "location");
  if (!location) throw new CakeError("E_REGISTRY", `${ctx}: POST ${urlish(url)} opened an upload without a Location`);
  const session: UploadSession = { location: new URL(location, url).toString() };
  const min = Number(header(res.headers, "oci-chunk-min-length"));
  if (Number.isSafeInteger(min) && min > 0) session.minChunk = min;
  return session;
}

async function cancelUpload(t: RegistryTransport, location: string, repo: string, ctx: string): Promise<void> {
  try {
    const res = await t.send(location, { method: "DELETE", scopes: t.pushScopes(repo), context: ctx });
    await res.body.dump();
  } catch {
    // an abandoned upload is the registry's to garbage-collect
  }
}

/** Where an upload stands: the offset the registry has committed and the URL to continue at. */
async function uploadStatus(t: RegistryTransport, location: string, repo: string, ctx: string, signal?: AbortSignal): Promise<{ location: string; committed: number } | undefined> {
  const res = await t.send(location, { method: "GET", scopes: t.pushScopes(repo), context: ctx, ...(signal ? { signal } : {}) });
  await res.body.dump();
  if (res.status === 404 || res.status === 400) return undefined; // unknown or invalidated: start again
  if (res.status < 200 || res.status >= 300) throw await t.fail(res, "GET", location, ctx);
  // `Range: 0-<last byte>`. "0-0" is what distribution says for an empty upload too: read as 0.
  const m = /^(?:bytes=)?0-(\d+)$/.exec(header(res.headers, "range") ?? "");
  const last = m ? Number(m[1]) : 0;
  const loc = header(res.headers, "location");
  return { location: loc ? new URL(loc, location).toString() : location, committed: last > 0 ? last + 1 : 0 };
}

async function uploadMonolithic(job: UploadJob, session: UploadSession | undefined): Promise<void> {
  const { t, repo, desc, open, opts, ctx } = job;
  const policy = { ...DEFAULT_RETRY, ...t.opts.retry };
  for (let attempt = 1; ; attempt++) {
    opts.signal?.throwIfAborted();
    const s = session ?? (await startUploadSession(t, repo, ctx, opts.signal));
    session = undefined; // a failed attempt leaves the session in an unknown state: next time, a new one
    const url = withDigest(s.location, desc.digest);
    const sent = await sendOnce(job, url, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream", "content-length": String(desc.size) },
      body: () => Readable.from(countedSource(open, 0, desc.size, ctx, opts.onProgress)),
    });
    const res = sent.res;
    let error = sent.error;
    if (res && res.status >= 200 && res.status < 300) {
      await res.body.dump();
      t.checkDigestHeader(res, desc.digest, ctx, "uploaded blob");
      return;
    }
    if (res && !RETRYABLE_STATUS.has(res.status)) throw await t.fail(res, "PUT", url, ctx);
    if (res) error = await t.fail(res, "PUT", url, ctx);
    if (attempt > policy.retries) throw asCakeError(error, ctx);
    await sleep(retryDelay(attempt, policy, res?.headers["retry-after"]), opts.signal);
  }
}

/**
 * One try of an upload request, not retried by the HTTP layer (the body may not be sendable twice,
 * and a failed chunk is resumed from where the registry stands): the answer, or a network or
 * source failure the caller may try again after; anything else is thrown.
 */
async function sendOnce(
  job: UploadJob,
  url: string,
  req: Pick<SendRequest, "method" | "headers" | "body">,
): Promise<{ res?: HttpResponse; error?: unknown }> {
  try {
    return { res: await job.t.send(url, { ...req, scopes: job.t.pushScopes(job.repo), context: job.ctx, signal: job.opts.signal, retry: { retries: 0 } }) };
  } catch (err) {
    if (!retryableUploadError(err, job.opts.signal)) throw asCakeError(err, job.ctx);
    return { error: err };
  }
}

async function startUploadSession(t: RegistryTransport, repo: string, ctx: string, signal?: AbortSignal): Promise<UploadSession> {
  return (await startUpload(t, repo, ctx, undefined, signal)) as UploadSession;
}

async function uploadChunked(job: UploadJob, session: UploadSession | undefined): Promise<void> {
  const { t, repo, desc, open, opts, ctx } = job;
  const policy = { ...DEFAULT_RETRY, ...t.opts.retry };
  const s = session ?? (await startUploadSession(t, repo, ctx, opts.signal));
  let location = s.location;
  let chunk = Math.max(opts.chunkSize ?? t.opts.chunkSize ?? REGISTRY_DEFAULTS.chunkSize, s.minChunk ?? 1);
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
        const sent = await sendOnce(job, location, {
          method: "PATCH",
          headers: {
            "content-type": "application/octet-stream",
            "content-range": `${offset}-${offset + len - 1}`,
            "content-length": String(len),
          },
          body: buf,
        });
        const res = sent.res;
        if ("error" in sent) failure = { error: sent.error, tooBig: false };
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
          const error = await t.fail(res, "PATCH", location, ctx);
          if (!tooBig && res.status !== 416 && !RETRYABLE_STATUS.has(res.status)) throw error;
          failure = { error, tooBig, retryAfter: res.headers["retry-after"] };
        }
      }
      // Something failed: ask the registry where the upload stands and go on from there.
      if (++failures > policy.retries) throw asCakeError(failure!.error, ctx);
      if (!failure!.tooBig) await sleep(retryDelay(failures, policy, failure!.retryAfter), opts.signal);
      const status = await uploadStatus(t, location, repo, ctx, opts.signal);
      let committed: number;
      if (status) {
        location = status.location;
        committed = status.committed;
      } else {
        location = (await startUploadSession(t, repo, ctx, opts.signal)).location;
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
  const res = await t.send(url, {
    method: "PUT",
    headers: { "content-type": "application/octet-stream" },
    body: Buffer.alloc(0),
    scopes: t.pushScopes(repo),
    context: ctx,
    signal: opts.signal,
  });
  if (res.status < 200 || res.status >= 300) {
    const error = await t.fail(res, "PUT", url, ctx);
    // A retried PUT whose first try went through finds its upload gone but the blob there.
    if (res.status === 404 && (await hasBlob(t, repo, desc.digest)) !== undefined) return;
    throw error;
  }
  await res.body.dump();
  t.checkDigestHeader(res, desc.digest, ctx, "uploaded blob");
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