/**
 * Manifests of a repository by tag or digest, verified both ways
 * (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests,
 * #pushing-manifests): GET, HEAD, PUT through the RegistryTransport.
 */
import { sha256Digest } from "../digest.js";
import { CakeError } from "../errors.js";
import { header } from "../http/request.js";
import { MEDIA_TYPE, MiB, REGISTRY_DEFAULTS } from "./options.js";
import { assertTagOrDigest, isDigest } from "./reference.js";
import type { RegistryTransport } from "./transport.js";

const MANIFEST_ACCEPT = Object.values(MEDIA_TYPE).join(", ");

/**
 * GET a manifest (OCI manifest or index, docker v2 manifest or list), refusing more than 4 MiB.
 * By digest, the bytes must hash to it; by tag, to the `Docker-Content-Digest` the registry sent.
 */
export async function getManifest(t: RegistryTransport, repo: string, reference: string): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
  const ctx = t.context(repo, reference);
  assertTagOrDigest(reference, ctx);
  const url = t.url(repo, `manifests/${reference}`);
  const limit = REGISTRY_DEFAULTS.manifestLimit;
  const res = await t.sendRead(url, { method: "GET", headers: { accept: MANIFEST_ACCEPT }, scopes: t.pullScopes(repo), context: ctx }, limit, "manifest");
  if (res.status !== 200) throw await t.failRead(res, "GET", url, ctx);
  const bytes = res.bytes;
  const digest = sha256Digest(bytes);
  if (isDigest(reference) && digest !== reference) {
    throw new CakeError("E_DIGEST", `${ctx}: the registry sent a manifest that hashes to ${digest}, not the digest asked for`);
  }
  const claimed = header(res.headers, "docker-content-digest");
  if (claimed?.startsWith("sha256:") && claimed !== digest) {
    throw new CakeError("E_DIGEST", `${ctx}: manifest hashes to ${digest} but the registry says ${claimed}`);
  }
  return { bytes, mediaType: manifestMediaType(header(res.headers, "content-type"), bytes), digest };
}

/** HEAD a manifest: its digest, size and media type, or undefined when there is none. */
export async function headManifest(t: RegistryTransport, repo: string, reference: string): Promise<{ digest: string; size: number; mediaType: string } | undefined> {
  const ctx = t.context(repo, reference);
  assertTagOrDigest(reference, ctx);
  const url = t.url(repo, `manifests/${reference}`);
  const res = await t.send(url, { method: "HEAD", headers: { accept: MANIFEST_ACCEPT }, scopes: t.pullScopes(repo), context: ctx });
  await res.body.dump();
  if (res.status === 404) return undefined;
  if (res.status !== 200) throw await t.fail(res, "HEAD", url, ctx);
  const digest = header(res.headers, "docker-content-digest") ?? (isDigest(reference) ? reference : undefined);
  const size = Number(header(res.headers, "content-length"));
  const contentType = header(res.headers, "content-type");
  if (digest === undefined || !Number.isFinite(size) || !contentType) {
    // Not every registry says all of it on HEAD: ask for the manifest itself.
    const m = await getManifest(t, repo, reference);
    return { digest: m.digest, size: m.bytes.length, mediaType: m.mediaType };
  }
  return { digest, size, mediaType: manifestMediaType(contentType, Buffer.alloc(0)) };
}

/** PUT a manifest under a tag or its digest; returns its digest (checked against the registry's). */
export async function putManifest(t: RegistryTransport, repo: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
  const ctx = t.context(repo, reference);
  assertTagOrDigest(reference, ctx);
  if (bytes.length > REGISTRY_DEFAULTS.manifestLimit) {
    throw new CakeError("E_SIZE", `${ctx}: manifest is ${bytes.length} bytes, more than the ${REGISTRY_DEFAULTS.manifestLimit / MiB} MiB registries accept`);
  }
  const digest = sha256Digest(bytes);
  if (isDigest(reference) && reference !== digest) {
    throw new CakeError("E_DIGEST", `${ctx}: manifest hashes to ${digest}, not the digest it is pushed as`);
  }
  const url = t.url(repo, `manifests/${reference}`);
  const res = await t.send(url, {
    method: "PUT",
    headers: { "content-type": mediaType },
    body: bytes,
    scopes: t.pushScopes(repo),
    context: ctx,
  });
  if (res.status < 200 || res.status >= 300) throw await t.fail(res, "PUT", url, ctx);
  await res.body.dump();
  t.checkDigestHeader(res, digest, ctx, "manifest");
  return digest;
}

/** The media type of a manifest: the Content-Type, else the `mediaType` the JSON declares. */
function manifestMediaType(contentType: string | undefined, bytes: Buffer): string {
  const ct = contentType?.split(";")[0]?.trim().toLowerCase();
  if (ct && ct !== "application/json" && ct !== "text/plain" && ct !== "application/octet-stream") return ct;
  try {
    const m = (JSON.parse(bytes.toString("utf8")) as { mediaType?: unknown }).mediaType;
    if (typeof m === "string") return m;
  } catch {
    // not JSON: the registry's word is all there is
  }
  return ct ?? "application/octet-stream";
}
