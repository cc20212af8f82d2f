/**
 * Blobs of a repository (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-blobs):
 * existence (HEAD), ranged fetch, and a small blob read whole and checked. Pushing or mounting
 * one is upload.ts.
 */
import { sha256Digest } from "../digest.js";
import { CakeError } from "../errors.js";
import { header, parseContentRange } from "../http/request.js";
import { discard, urlish } from "./errors.js";
import type { FetchedBlob } from "./options.js";
import { assertDigest } from "./reference.js";
import type { RegistryTransport } from "./transport.js";

/** HEAD a blob: its size (-1 when the registry does not say), or undefined when it is not there. */
export async function hasBlob(t: RegistryTransport, repo: string, digest: string, signal?: AbortSignal): Promise<number | undefined> {
  const ctx = t.context(repo, digest);
  assertDigest(digest, ctx);
  const url = t.url(repo, `blobs/${digest}`);
  const res = await t.send(url, { method: "HEAD", scopes: t.pullScopes(repo), context: ctx, ...(signal ? { signal } : {}) });
  await res.body.dump();
  if (res.status === 404) return undefined;
  if (res.status !== 200) throw await t.fail(res, "HEAD", url, ctx);
  const size = Number(header(res.headers, "content-length"));
  return Number.isFinite(size) ? size : -1;
}

/**
 * GET a blob, or the bytes [start, end) of it. The registry may redirect to storage (followed,
 * without Authorization) and may ignore the Range: `start` says where the body really begins.
 * The caller owns `body` and verifies what it reads.
 */
export async function fetchBlob(t: RegistryTransport, repo: string, digest: string, range?: { start: number; end?: number }, signal?: AbortSignal): Promise<FetchedBlob> {
  const ctx = t.context(repo, digest);
  assertDigest(digest, ctx);
  const headers: Record<string, string> = {};
  if (range && (range.start > 0 || range.end !== undefined)) {
    if (!Number.isSafeInteger(range.start) || range.start < 0 || (range.end !== undefined && !(range.end > range.start))) {
      throw new CakeError("E_USAGE", `${ctx}: bad byte range ${range.start}-${range.end ?? ""}`);
    }
    headers.range = `bytes=${range.start}-${range.end !== undefined ? range.end - 1 : ""}`;
  }
  const url = t.url(repo, `blobs/${digest}`);
  const res = await t.send(url, { method: "GET", headers, scopes: t.pullScopes(repo), context: ctx, signal });
  if (res.status === 200) {
    const len = Number(header(res.headers, "content-length"));
    return { body: res.body, status: 200, start: 0, totalSize: Number.isFinite(len) ? len : undefined };
  }
  if (res.status === 206) {
    const cr = parseContentRange(header(res.headers, "content-range"));
    if (!cr) {
      discard(res.body);
      throw new CakeError("E_REGISTRY", `${ctx}: GET ${urlish(res.url)} returned 206 without a valid Content-Range`);
    }
    return { body: res.body, status: 206, start: cr.start, totalSize: cr.total };
  }
  throw await t.fail(res, "GET", url, ctx);
}

/**
 * Bytes [start, end) of a blob in memory (a safetensors header, a proof window), read in the retry
 * loop that small answers get: a cut answer is continued from its last byte, a stall is a bounded
 * try. `ignoredRange`: the registry sent the blob from byte 0 (the window was cut out of it).
 */
export async function readBlobRange(t: RegistryTransport, repo: string, digest: string, start: number, end: number, signal?: AbortSignal): Promise<{ bytes: Buffer; ignoredRange: boolean }> {
  const ctx = t.context(repo, digest);
  assertDigest(digest, ctx);
  if (!Number.isSafeInteger(start) || start < 0 || !(end > start)) throw new CakeError("E_USAGE", `${ctx}: bad byte range ${start}-${end}`);
  const url = t.url(repo, `blobs/${digest}`);
  const req = { method: "GET" as const, headers: { range: `bytes=${start}-${end - 1}` }, scopes: t.pullScopes(repo), context: ctx, ...(signal ? { signal } : {}) };
  const res = await t.sendRead(url, req, end - start, "blob");
  if (res.status !== 200 && res.status !== 206) throw await t.failRead(res, "GET", url, ctx);
  if (res.bytes.length !== end - start) throw new CakeError("E_SIZE", `${ctx}: short read at ${start}-${end}: ${res.bytes.length} bytes`);
  return { bytes: res.bytes, ignoredRange: res.status === 200 };
}

/** A small blob (a config, a recipe) read whole and checked against its digest. */
export async function readBlob(t: RegistryTransport, repo: string, digest: string, limit: number): Promise<Buffer> {
  const ctx = t.context(repo, digest);
  assertDigest(digest, ctx);
  const url = t.url(repo, `blobs/${digest}`);
  const res = await t.sendRead(url, { method: "GET", scopes: t.pullScopes(repo), context: ctx }, limit, "blob");
  if (res.status !== 200) throw await t.failRead(res, "GET", url, ctx);
  const got = sha256Digest(res.bytes);
  if (got !== digest) throw new CakeError("E_DIGEST", `${ctx}: the registry sent a blob that hashes to ${got}`);
  return res.bytes;
}
