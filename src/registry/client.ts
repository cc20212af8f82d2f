/**
 * RegistryClient: the OCI distribution API of one registry host
 * (https://github.com/opencontainers/distribution-spec/blob/main/spec.md): manifests by tag or
 * digest (verified), blobs (existence, ranged fetch, cross-repo mount, monolithic and chunked
 * push that resumes where the registry says it stands), and tag listings that follow `Link`.
 *
 * A thin facade over one role per file, as oras-go's registry/remote: the transport
 * (transport.ts: origin, Authenticator, user agent; every request and every failure),
 * manifests.ts, blobs.ts and upload.ts. Every failure is a one-line CakeError naming
 * registry, repository and reference, and the registry's own error code.
 */
import type { Readable } from "node:stream";
import { CakeError } from "../errors.js";
import { followPages } from "../http/paginate.js";
import { fetchBlob, hasBlob, readBlob } from "./blobs.js";
import { getManifest, headManifest, putManifest } from "./manifests.js";
import { REGISTRY_DEFAULTS, type BlobDescriptor, type FetchedBlob, type PushBlobOptions, type PushBlobResult, type RegistryClientOptions } from "./options.js";
import { assertRepository } from "./reference.js";
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

/** The token scope distribution asks for on `GET /v2/_catalog`. */
const CATALOG_SCOPE = "registry:catalog:*";

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
}
