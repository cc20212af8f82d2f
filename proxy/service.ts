/**
 * The proxy's one storage facade (verdaccio's shape): routes ask it for manifests, blobs and tags;
 * it serves from the local store first, else converts the Hub revision (the same `pullHf` as
 * `cake pull hf://…`, so the same manifest digest), else fetches a blob by its known Hub range or
 * from the backend registry — always verified before a byte is served.
 *
 * Access: every request is checked against the Hub with the client's own credentials (or the
 * server's token when the client has none), so cached bytes of a gated or private repo never reach
 * a client the Hub would refuse. Decisions are cached per credentials and repo for a minute.
 */
import { createHash } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import {
  ANN,
  CakeError,
  MT,
  fileAccess,
  HubError,
  HubFileReader,
  formatHfRef,
  listRefs,
  MAX_MANIFEST,
  modelInfo,
  ociRefName,
  parseManifest,
  parseReference,
  pullHf,
  pushToRegistry,
  readConfig,
  clientFor,
  transferBlobs,
  walkGraph,
  type HubBlobSource,
  type HubParams,
  type ProgressSink,
  type RegistryAccess,
  type Store,
} from "../src/index.js";
import { Metrics } from "./metrics.js";
import { Names, isValidTag, isWellFormedDigest, revisionToTag, tagToRevision } from "./names.js";
import { OciError, ociErrorOf } from "./oci-errors.js";

export interface ServiceOptions {
  store: Store;
  hubUrl: string;
  /** Used for clients that send no credentials (and for nothing else). */
  hubToken?: string;
  aliases?: Record<string, string>;
  /** `host[:port]/prefix`: a registry shared by replicas; converted artifacts are pushed there. */
  backend?: string;
  backendAccess?: RegistryAccess;
  concurrency?: number;
  log?: (event: Record<string, unknown>) => void;
  /** How long an access decision is reused, ms. */
  accessTtlMs?: number;
}

export interface Conversion {
  ref: string;
  startedAt: number;
  bytes: number;
  total: number;
}

const DIGEST = /^sha256:[a-f0-9]{64}$/;

export class ProxyService {
  readonly metrics = new Metrics();
  readonly names: Names;
  readonly conversions = new Map<string, { status: Conversion; done: Promise<string> }>();
  private readonly access = new Map<string, { until: number; decision: Promise<void> }>();
  private readonly owners = new Map<string, { version: number; map: Map<string, string> }>();
  /** digest -> where each converted repo holds it (one source per repo: the same tensor may be in several). */
  private sources?: Promise<Map<string, HubBlobSource[]>>;
  private readonly sourcesFile: string;

  constructor(readonly opts: ServiceOptions) {
    this.names = new Names(opts.aliases ?? {});
    this.sourcesFile = path.join(opts.store.root, "cake", "proxy-sources");
  }

  /** Hub parameters for a client: its token, else the server's. */
  hubFor(clientToken: string | undefined): HubParams {
    const token = clientToken ?? this.opts.hubToken;
    return { hubUrl: this.opts.hubUrl, ...(token ? { accessToken: token } : {}) };
  }

  private log(event: Record<string, unknown>) {
    this.opts.log?.(event);
  }

  // ---- access ----

  /**
   * Throws UNAUTHORIZED (no credentials) or DENIED (credentials the Hub refuses) unless these
   * credentials may read `repo` on the Hub right now. Model info enforces private repos; a gated
   * repo's metadata is public, so a file of the commit is probed too.
   */
  async authorize(repo: string, commit: string | undefined, hub: HubParams): Promise<void> {
    const who = hub.accessToken ? createHash("sha256").update(hub.accessToken).digest("hex").slice(0, 16) : "anonymous";
    const key = `${who}|${repo}`;
    const hit = this.access.get(key);
    if (hit && hit.until > Date.now()) return hit.decision;
    const decision = (async () => {
      const refuse = (why: string) =>
        hub.accessToken ? new OciError("DENIED", `${repo}: ${why}`) : new OciError("UNAUTHORIZED", `${repo}: ${why}; log in with your Hugging Face token as the password`);
      let info;
      try {
        info = await modelInfo(hub, repo, commit ?? "main");
      } catch (err) {
        const e = err as CakeError;
        if (err instanceof HubError && err.hubCode === "RevisionNotFound") throw new OciError("MANIFEST_UNKNOWN", e.message);
        if (e.code === "E_NOT_FOUND" || e.code === "E_AUTH" || e.code === "E_GATED") throw refuse("the Hub refuses access");
        throw err;
      }
      if (!info.gated && !info.private) return;
      const probe = await this.probePath(repo, info.sha);
      if (probe && (await fileAccess(hub, repo, info.sha, probe)) === "denied") throw refuse("gated repository: your token has no access");
    })();
    this.access.set(key, { until: Date.now() + (this.opts.accessTtlMs ?? 60_000), decision });
    decision.catch(() => this.access.delete(key));
    return decision;
  }

  /** A file of the commit to probe access with: a weights file when known, else config.json. */
  private async probePath(repo: string, commit: string): Promise<string | undefined> {
    const desc = await this.opts.store.resolve(formatHfRef({ repo, revision: commit }));
    if (!desc) return "config.json";
    const cfg = await readConfig(this.opts.store, desc.digest);
    return cfg?.files.find((f) => f.format === "safetensors")?.path ?? cfg?.files[0]?.path;
  }

  // ---- manifests ----

  /** A manifest by tag (a Hub revision: resolved to its commit now) or by digest (immutable). */
  async manifest(name: string, reference: string, clientToken: string | undefined): Promise<{ digest: string; bytes: Buffer }> {
    const hub = this.hubFor(clientToken);
    const repo = await this.names.repoFor(name, hub);
    // Tags have no ':' (isValidTag): a reference with one is a digest, and a malformed one a bad request.
    if (reference.includes(":") && !isWellFormedDigest(reference)) throw new OciError("DIGEST_INVALID", `${name}@${reference}: not a valid digest (sha256: 64 lower-case hex digits)`);
    if (DIGEST.test(reference)) {
      const commit = await this.commitOfManifest(repo, reference);
      if (!commit) throw new OciError("MANIFEST_UNKNOWN", `${name}@${reference}: not a manifest of this model`);
      await this.authorize(repo, commit, hub);
      this.metrics.cacheHits++;
      return { digest: reference, bytes: await this.opts.store.readBlob(reference, 4 << 20) };
    }
    if (!isValidTag(reference)) throw new OciError("MANIFEST_UNKNOWN", `${name}:${reference}: not a valid tag`);
    const revision = tagToRevision(reference);
    let commit: string;
    try {
      commit = (await modelInfo(hub, repo, revision)).sha;
    } catch (err) {
      const e = ociErrorOf(err, "MANIFEST_UNKNOWN");
      if (e.code === "MANIFEST_UNKNOWN" || e.code === "NAME_UNKNOWN") throw new OciError("MANIFEST_UNKNOWN", `${name}:${reference}: ${(err as Error).message}`);
      // An anonymous client refused is asked for credentials (401 makes docker/oras send them); an upstream
      // problem stays what it is (503, 429), for every client.
      throw !hub.accessToken && e.code === "DENIED" ? new OciError("UNAUTHORIZED", e.message) : e;
    }
    await this.authorize(repo, commit, hub);
    const digest = await this.ensureConverted(repo, commit, hub);
    return { digest, bytes: await this.opts.store.readBlob(digest, 4 << 20) };
  }

  private async commitOfManifest(repo: string, digest: string): Promise<string | undefined> {
    for (const t of await this.opts.store.tags()) {
      if (t.descriptor.digest === digest && t.descriptor.annotations?.[ANN.hfRepo] === repo) return t.descriptor.annotations[ANN.hfCommit];
    }
    return undefined;
  }

  /** The manifest digest of `repo@commit`, converting it (once, shared by concurrent requests) if needed. */
  async ensureConverted(repo: string, commit: string, hub: HubParams): Promise<string> {
    const ref = formatHfRef({ repo, revision: commit });
    const have = await this.opts.store.resolve(ref);
    if (have) {
      this.metrics.cacheHits++;
      return have.digest;
    }
    const running = this.conversions.get(ref);
    if (running) return running.done;
    const status: Conversion = { ref, startedAt: Date.now(), bytes: 0, total: 0 };
    const done = this.convert(repo, commit, hub, status).finally(() => this.conversions.delete(ref));
    this.conversions.set(ref, { status, done });
    return done;
  }

  private async convert(repo: string, commit: string, hub: HubParams, status: Conversion): Promise<string> {
    const ref = status.ref;
    if (this.opts.backend) {
      const got = await this.leased(() => this.fromBackend(repo, commit)).catch((err) => {
        this.log({ event: "backend-miss", ref, error: (err as Error).message });
        return undefined;
      });
      if (got) return got;
    }
    this.metrics.conversions++;
    this.log({ event: "convert-start", ref });
    const progress = this.progressFor(status);
    const sources = await this.loadSources();
    const lines: string[] = [];
    const r = await pullHf(
      { kind: "hf", repo, revision: commit },
      {
        store: this.opts.store,
        hub,
        progress,
        ...(this.opts.concurrency ? { concurrency: this.opts.concurrency } : {}),
        onBlob: (digest, source) => {
          addSource(sources, digest, source);
          lines.push(`${digest} ${JSON.stringify(source)}\n`);
        },
      },
    );
    await fsp.appendFile(this.sourcesFile, lines.join(""));
    this.metrics.upstreamBytes += r.stats.fetchedBytes;
    this.log({ event: "convert-done", ref, digest: r.manifestDigest, seconds: (Date.now() - status.startedAt) / 1000, fetchedBytes: r.stats.fetchedBytes });
    if (this.opts.backend) await this.toBackend(repo, commit).catch((err) => this.log({ event: "backend-push-failed", ref, error: (err as Error).message }));
    return r.manifestDigest;
  }

  private progressFor(status: Conversion): ProgressSink {
    let lastLog = 0;
    return {
      addTotal: (b) => (status.total += b),
      bytes: (n) => {
        status.bytes += n;
        if (Date.now() - lastLog > 2000) {
          lastLog = Date.now();
          this.log({ event: "convert-progress", ref: status.ref, bytes: status.bytes, total: status.total });
        }
      },
      item: () => {},
      done: () => {},
    };
  }

  // ---- blobs ----

  /** The store path of a blob of `name` (fetching it first when only its source is known). */
  async blob(name: string, digest: string, clientToken: string | undefined): Promise<{ file: string; size: number }> {
    // A well-formed digest of another algorithm is simply not here (404); a malformed one is a bad request.
    if (!DIGEST.test(digest)) {
      if (isWellFormedDigest(digest)) throw new OciError("BLOB_UNKNOWN", `${name}: no blob ${digest} (only sha256 here)`);
      throw new OciError("DIGEST_INVALID", `${digest}: not a valid digest (sha256: 64 lower-case hex digits)`);
    }
    const hub = this.hubFor(clientToken);
    const repo = await this.names.repoFor(name, hub);
    const commit = await this.commitOwning(repo, digest);
    if (!commit) throw new OciError("BLOB_UNKNOWN", `${name}: no blob ${digest} in this model`);
    await this.authorize(repo, commit, hub);
    const store = this.opts.store;
    let size = await store.blobSize(digest);
    if (size === undefined) {
      await this.leased(() => this.refetch(repo, commit, digest, hub));
      size = await store.blobSize(digest);
      if (size === undefined) throw new OciError("BLOB_UNKNOWN", `${name}: blob ${digest} could not be fetched`);
    } else this.metrics.cacheHits++;
    return { file: store.blobPath(digest), size };
  }

  /** The commit of `repo` whose artifact (manifest, config or layer) has this digest. */
  private async commitOwning(repo: string, digest: string): Promise<string | undefined> {
    return (await this.ownersOf(repo)).get(digest);
  }

  /**
   * digest -> commit for every blob of `repo`'s converted revisions, rebuilt only when the store's
   * tags change: a blob request must not re-read every manifest.
   */
  private async ownersOf(repo: string): Promise<Map<string, string>> {
    const version = await this.opts.store.tagsVersion();
    const hit = this.owners.get(repo);
    if (hit && hit.version === version) return hit.map;
    const map = new Map<string, string>();
    for (const t of await this.opts.store.tags()) {
      const a = t.descriptor.annotations;
      const commit = a?.[ANN.hfCommit];
      if (a?.[ANN.hfRepo] !== repo || !commit || !t.ref.endsWith(`@${commit}`)) continue;
      const store = this.opts.store;
      // A manifest the store lost or cannot parse owns nothing here: its blobs are not served from this tag.
      await walkGraph(t.descriptor, (d) => store.readBlob(d.digest, MAX_MANIFEST), (d) => void map.set(d.digest, commit)).catch(() => {});
    }
    this.owners.set(repo, { version, map });
    return map;
  }

  /**
   * A blob the store lost (gc) or never had (a replica): from its Hub range, else the backend; verified.
   * Only a range of `repo` itself is asked for: the same bytes in another repo (perhaps gated) are
   * read with the credentials that were checked for this one, and must not be.
   */
  private async refetch(repo: string, commit: string, digest: string, hub: HubParams): Promise<void> {
    const source = (await this.loadSources()).get(digest)?.find((s) => s.repo === repo);
    const store = this.opts.store;
    if (source) {
      const reader = new HubFileReader(hub, source.repo, source.commit, source.path);
      const { stats } = await transferBlobs(store, [
        {
          key: digest.slice(7),
          size: source.end - source.begin,
          expected: digest,
          label: `hf://${source.repo}/${source.path} bytes ${source.begin}-${source.end}`,
          existing: async () => ((await store.hasBlob(digest)) ? digest : undefined),
          open: (s, e, signal) => reader.open(source.begin + s, source.begin + e, signal).then((r) => ({ body: r.body, start: r.start - source.begin })),
        },
      ]);
      this.metrics.upstreamBytes += stats.fetchedBytes;
      return;
    }
    if (this.opts.backend) {
      const { registry, repository } = this.backendRef(repo, commit);
      const client = clientFor(registry, this.opts.backendAccess);
      const manifest = parseManifest(await store.readBlob((await store.resolve(formatHfRef({ repo, revision: commit })))!.digest, 4 << 20), repo);
      const desc = [manifest.config, ...manifest.layers].find((d) => d.digest === digest);
      if (!desc) return;
      await transferBlobs(store, [
        {
          key: digest.slice(7),
          size: desc.size,
          expected: digest,
          label: `${registry}/${repository} blob ${digest}`,
          existing: async () => ((await store.hasBlob(digest)) ? digest : undefined),
          open: async (s, e, signal) => {
            const r = await client.fetchBlob(repository, digest, { start: s, end: e }, signal);
            return { body: r.body, start: r.start };
          },
        },
      ]);
    }
  }

  private loadSources(): Promise<Map<string, HubBlobSource[]>> {
    this.sources ??= (async () => {
      const map = new Map<string, HubBlobSource[]>();
      const text = await fsp.readFile(this.sourcesFile, "utf8").catch(() => "");
      for (const line of text.split("\n")) {
        const sp = line.indexOf(" ");
        if (sp < 0) continue;
        try {
          addSource(map, line.slice(0, sp), JSON.parse(line.slice(sp + 1)) as HubBlobSource);
        } catch {
          /* a torn last line */
        }
      }
      await fsp.mkdir(path.dirname(this.sourcesFile), { recursive: true });
      return map;
    })();
    return this.sources;
  }

  // ---- tags ----

  async tags(name: string, clientToken: string | undefined): Promise<string[]> {
    const hub = this.hubFor(clientToken);
    const repo = await this.names.repoFor(name, hub);
    await this.authorize(repo, undefined, hub);
    const refs = await listRefs(hub, repo);
    return [...refs.branches, ...refs.tags].map((r) => revisionToTag(r.name)).filter(isValidTag).sort();
  }

  // ---- backend registry (shared cache for replicas) ----

  private backendRef(repo: string, commit: string) {
    const r = parseReference(`${this.opts.backend}/${repo.toLowerCase()}:${commit}`);
    return { registry: r.registry, repository: r.repository, tag: commit, full: `${this.opts.backend}/${repo.toLowerCase()}:${commit}` };
  }

  /** Another replica converted it: take the manifest (and config + recipe) from the backend. */
  /**
   * Runs `fn`, which writes blobs (and tags), under a store lease: a `cake gc` waits for it or is
   * refused, so it never deletes what `fn` is about to serve or tag (docs/architecture.md).
   */
  private async leased<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.opts.store.lease();
    try {
      return await fn();
    } finally {
      await release();
    }
  }

  private async fromBackend(repo: string, commit: string): Promise<string | undefined> {
    const b = this.backendRef(repo, commit);
    const client = clientFor(b.registry, this.opts.backendAccess);
    const head = await client.headManifest(b.repository, b.tag);
    if (!head) return undefined;
    const { bytes, digest } = await client.getManifest(b.repository, b.tag);
    const manifest = parseManifest(bytes, b.full);
    const store = this.opts.store;
    // Config and recipe now (small, needed for access probes and export); tensors on demand.
    const small = [manifest.config, ...manifest.layers.filter((l) => l.mediaType === MT.recipe)];
    await transferBlobs(
      store,
      small.map((d) => ({
        key: d.digest.slice(7),
        size: d.size,
        expected: d.digest,
        label: `${b.full} blob ${d.digest}`,
        existing: async () => ((await store.hasBlob(d.digest)) ? d.digest : undefined),
        open: async (s: number, e: number, signal: AbortSignal) => {
          const r = await client.fetchBlob(b.repository, d.digest, { start: s, end: e }, signal);
          return { body: r.body, start: r.start };
        },
      })),
    );
    if ((await store.putBytes(bytes)) !== digest) throw new CakeError("E_DIGEST", `${b.full}: manifest digest mismatch`);
    const ref = formatHfRef({ repo, revision: commit });
    await store.tag(ref, ociRefName(ref), { mediaType: MT.manifest, digest, size: bytes.length, artifactType: MT.artifact }, { [ANN.hfRepo]: repo, [ANN.hfCommit]: commit });
    this.log({ event: "backend-hit", ref, digest });
    return digest;
  }

  private async toBackend(repo: string, commit: string): Promise<void> {
    const b = this.backendRef(repo, commit);
    const r = await pushToRegistry(formatHfRef({ repo, revision: commit }), b.full, { store: this.opts.store, ...this.opts.backendAccess });
    this.log({ event: "backend-push", ref: b.full, uploaded: r.counts.uploaded, bytes: r.uploadedBytes });
  }
}

/** Records where `repo` holds a blob, replacing that repo's older source (a later commit of it). */
function addSource(map: Map<string, HubBlobSource[]>, digest: string, source: HubBlobSource): void {
  const list = (map.get(digest) ?? []).filter((s) => s.repo !== source.repo);
  list.push(source);
  map.set(digest, list);
}
