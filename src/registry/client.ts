/**
 * RegistryClient: the OCI distribution API of one registry host
 * (https://github.com/opencontainers/distribution-spec/blob/main/spec.md): manifests by tag or
 * digest (verified), blobs (existence, ranged fetch, cross-repo mount, monolithic and chunked
 * push that resumes where the registry says it stands), and tag listings that follow `Link`.
 *
 * A thin facade over one role per file, as oras-go's registry/remote: the transport
 * (transport.ts: origin, Authenticator, user agent; every request and every failure),
 * manifests.ts, blobs.ts, upload.ts and tags.ts. Every failure is a one-line CakeError naming
 * registry, repository and reference, and the registry's own error code.
 */
import type { Readable } from "node:stream";
import { fetchBlob, hasBlob, readBlob, readBlobRange } from "./blobs.js";
import { getManifest, headManifest, putManifest } from "./manifests.js";
import type { BlobDescriptor, FetchedBlob, PushBlobOptions, PushBlobResult, RegistryClientOptions } from "./options.js";
import { catalog, listTags, tags } from "./tags.js";
import { RegistryTransport } from "./transport.js";
import { mountBlob, pushBlob } from "./upload.js";

export {
  MEDIA_TYPE,
  REGISTRY_DEFAULTS,
  type BlobDescriptor,
  type FetchedBlob,
  type PushBlobOptions,
  type PushBlobResult,
  type RegistryClientOptions,
} from "./options.js";

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
  readBlobRange(repo: string, digest: string, start: number, end: number, signal?: AbortSignal): Promise<{ bytes: Buffer; ignoredRange: boolean }> {
    return readBlobRange(this.transport, repo, digest, start, end, signal);
  }

  readBlob(repo: string, digest: string, limit: number): Promise<Buffer> {
    return readBlob(this.transport, repo, digest, limit);
  }

  /** Mounts a blob from another repository of this registry: true when it did, false when it would not. */
  mountBlob(repo: string, digest: string, fromRepo: string): Promise<boolean> {
    return mountBlob(this.transport, repo, digest, fromRepo);
  }

  /** Pushes a blob unless the registry has it: a mount from `mountFrom`, else an upload (upload.ts). */
  pushBlob(repo: string, desc: BlobDescriptor, open: (start: number) => Readable, opts: PushBlobOptions = {}): Promise<PushBlobResult> {
    return pushBlob(this.transport, repo, desc, open, opts);
  }

  /** Tags of a repository, page by page, following `Link: <…>; rel="next"`. */
  tags(repo: string, opts: { pageSize?: number } = {}): AsyncGenerator<string> {
    return tags(this.transport, repo, opts);
  }

  /** Repositories of the registry (`GET /v2/_catalog`, where the registry offers it), page by page. */
  catalog(opts: { pageSize?: number } = {}): AsyncGenerator<string> {
    return catalog(this.transport, opts);
  }

  /** Every tag of a repository, all pages read. */
  listTags(repo: string): Promise<string[]> {
    return listTags(this.transport, repo);
  }
}
