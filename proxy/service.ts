/**
 * The proxy's one storage facade (verdaccio's shape): routes ask it for manifests, blobs and tags;
 * it serves from the local store first, else converts the Hub revision (the same `pullHf` as
 * `cake pull hf://…`, so the same manifest digest), else fetches a blob by its known Hub range or
 * from the backend registry — always verified before a byte is served.
 *
 * Its parts by role: access.ts (may this client read this repo, asked of the Hub), blob-sources.ts
 * (where each converted blob lies on the Hub, for refetches), replication.ts (replicas sharing the
 * work over a backend: claims, waits, background pushes, revisions looked up there) and backend.ts
 * (the registry replicas share).
 */
import type { Readable } from "node:stream";
import {
  ANN,
  DEFAULT_CONCURRENCY,
  HubError,
  HubFileReader,
  isTransient,
  digestJob,
  hubFileSource,
  formatHfRef,
  listRefs,
  MANIFEST_LIMIT,
  modelInfo,
  pullHf,
  transferBlobs,
  walkGraph,
  type HubBlobSource,
  type HubParams,
  type ProgressSink,
  type RegistryAccess,
  type Store,
} from "../src/index.js";
import { AccessCheck } from "./access.js";
import { Backend } from "./backend.js";
import { BlobSources } from "./blob-sources.js";
import { Metrics } from "./metrics.js";
import { DEFAULT_BRANCH, Names, assertBlobDigest, isValidTag, isWellFormedDigest, revisionToTag, tagToRevision } from "./names.js";
import { OciError, ociErrorOf } from "./oci-errors.js";
import { Replication } from "./replication.js";

export interface ServiceOptions {
  store: Store;
  hubUrl: string;
  /** Used for clients that send no credentials (and for nothing else). */
  hubToken?: string;
  aliases?: Record<string, string>;
  /** `host[:port]/prefix`: a registry shared by replicas; converted artifacts are pushed there. */
  backend?: string;
  backendAccess?: RegistryAccess;
  /** `host[:port]/prefix` of index artifacts (read with backendAccess): passed to each conversion. */
  index?: string;
  concurrency?: number;
  log?: (event: Record<string, unknown>) => void;
  /** How long an access decision is reused, ms. */
  accessTtlMs?: number;
  /** How often a cake client waiting on a conversion is sent 102 Processing, ms (default 10 s). */
  processingEveryMs?: number;
  /** How long a replica's claim on converting a revision holds other replicas off, ms (default 30 s; renewed by its owner every third of it until its push lands). */
  claimTtlMs?: number;
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
  /** May this client read this repo (also asked by the ModelPack view, modelpack-view.ts). */
  readonly access: AccessCheck;
  /** Replicas sharing the work over a backend registry, when there is one. */
  private readonly replication?: Replication;
  private readonly owners = new Map<string, { version: number; map: Map<string, string> }>();
  /** digest -> where each converted repo holds it on the Hub. */
  private readonly sources: BlobSources;
  /** repo -> commits clients resolved a tag to here. */
  private readonly namedCommits = new Map<string, Set<string>>();

  constructor(readonly opts: ServiceOptions) {
    this.names = new Names(opts.aliases ?? {});
    this.sources = new BlobSources(opts.store.root);
    this.access = new AccessCheck(opts.store, opts.accessTtlMs);
    if (opts.backend) {
      const log = (e: Record<string, unknown>) => this.log(e);
      const backend = new Backend(opts.backend, opts.backendAccess, opts.store, log, (n) => this.metrics.backendFetched(n));
      this.replication = new Replication({ backend, store: opts.store, metrics: this.metrics, log, claimTtlMs: () => this.opts.claimTtlMs });
    }
  }

  /** Hub parameters for a client: its token, else the server's. */
  hubFor(clientToken: string | undefined): HubParams {
    const token = clientToken ?? this.opts.hubToken;
    return { hubUrl: this.opts.hubUrl, ...(token ? { accessToken: token } : {}) };
  }

  private log(event: Record<string, unknown>) {
    this.opts.log?.(event);
  }

  // ---- manifests ----

  /** A manifest by tag (a Hub revision: resolved to its commit now) or by digest (immutable). */
  async manifest(name: string, reference: string, clientToken: string | undefined): Promise<{ digest: string; bytes: Buffer }> {
    const hub = this.hubFor(clientToken);
    const repo = await this.names.repoFor(name, hub);
    // Tags have no ':' (isValidTag): a reference with one is a digest, and a malformed one a bad request.
    if (reference.includes(":") && !isWellFormedDigest(reference)) throw new OciError("DIGEST_INVALID", `${name}@${reference}: not a valid digest (sha256: 64 lower-case hex digits)`);
    if (DIGEST.test(reference)) {
      // Another replica may have converted it: the backend holds it under one of the repo's commits.
      let commit = await this.commitOfManifest(repo, reference);
      if (!commit && (await this.findInBackend(repo, reference, hub))) commit = await this.commitOfManifest(repo, reference);
      if (!commit) throw new OciError("MANIFEST_UNKNOWN", `${name}@${reference}: not a manifest of this model`);
      await this.access.authorize(repo, commit, hub);
      this.metrics.cacheHits++;
      return { digest: reference, bytes: await this.opts.store.readBlob(reference, MANIFEST_LIMIT) };
    }
    if (!isValidTag(reference)) throw new OciError("MANIFEST_UNKNOWN", `${name}:${reference}: not a valid tag`);
    let commit: string;
    try {
      commit = await this.commitOfTag(hub, repo, reference);
    } catch (err) {
      const e = ociErrorOf(err, "MANIFEST_UNKNOWN");
      if (e.code === "MANIFEST_UNKNOWN" || e.code === "NAME_UNKNOWN") throw new OciError("MANIFEST_UNKNOWN", `${name}:${reference}: ${(err as Error).message}`);
      // An anonymous client refused is asked for credentials (401 makes docker/oras send them); an upstream
      // problem stays what it is (503, 429), for every client.
      throw !hub.accessToken && e.code === "DENIED" ? new OciError("UNAUTHORIZED", e.message) : e;
    }
    await this.access.authorize(repo, commit, hub);
    this.rememberCommit(repo, commit);
    const digest = await this.ensureConverted(repo, commit, hub);
    return { digest, bytes: await this.opts.store.readBlob(digest, MANIFEST_LIMIT) };
  }

  /**
   * The commit a tag names now. `latest`, what crane, skopeo and docker ask for when given no tag,
   * is the repo's default branch (main) unless the repo has a revision of that name.
   */
  private async commitOfTag(hub: HubParams, repo: string, tag: string): Promise<string> {
    try {
      return (await modelInfo(hub, repo, tagToRevision(tag))).sha;
    } catch (err) {
      if (tag !== "latest" || !(err instanceof HubError) || err.hubCode !== "RevisionNotFound") throw err;
      return (await modelInfo(hub, repo, DEFAULT_BRANCH)).sha;
    }
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
    if (this.replication) {
      const other = await this.replication.takeOrClaim(repo, commit, ref);
      if (other) return other;
    }
    try {
      return await this.convertFromHub(repo, commit, hub, status);
    } catch (err) {
      // Released at once, so a replica waiting on it converts instead of waiting out the expiry.
      await this.replication?.release(repo, commit);
      throw err;
    }
  }

  private async convertFromHub(repo: string, commit: string, hub: HubParams, status: Conversion): Promise<string> {
    const ref = status.ref;
    this.metrics.conversions++;
    this.log({ event: "convert-start", ref });
    const began = Date.now(); // the conversion alone: the backend lookup and claim before it are not in `seconds`
    const progress = this.progressFor(status);
    const found: Array<[string, HubBlobSource]> = [];
    const r = await pullHf(
      { kind: "hf", repo, revision: commit },
      {
        store: this.opts.store,
        hub,
        progress,
        // Fixed: a server runs many transfers at once, each would ramp up its own streams (src/transfer/ramp.ts).
        concurrency: this.opts.concurrency ?? DEFAULT_CONCURRENCY,
        // What a replica that died converting this revision pushed already comes from the backend, then the operator's index.
        index: [...(this.replication ? [this.replication.backend.resumeSource(commit)] : []), ...(this.opts.index ? [{ prefix: this.opts.index, access: this.opts.backendAccess ?? {} }] : [])],
        onNotice: (line) => this.log({ event: "convert-notice", ref, message: line }),
        onBlob: (digest, source) => found.push([digest, source]),
      },
    );
    await this.sources.record(found);
    this.metrics.hubFetched(r.stats.fetchedBytes);
    const resumed = r.reuse?.fromRegistry;
    if (resumed) this.metrics.backendFetched(resumed.bytes);
    this.log({ event: "convert-done", ref, digest: r.manifestDigest, seconds: (Date.now() - began) / 1000, fetchedBytes: r.stats.fetchedBytes, ...(resumed ? { backendBlobs: resumed.blobs, backendBytes: resumed.bytes } : {}) });
    // The client is answered now; the other replicas get it once the push lands (the manifest tag last).
    this.replication?.pushInBackground(repo, commit);
    return r.manifestDigest;
  }

  /** Resolves when every background push to the backend has landed (or given up on stop). */
  async backendSettled(): Promise<void> {
    await this.replication?.backendSettled();
  }

  /**
   * Stops the background pushes to the backend and releases this replica's claims there
   * (Replication.stop). Resolves when done.
   */
  async stop(): Promise<void> {
    await this.replication?.stop();
  }

  /** Commits of `repo` that clients named (tags resolved here): where a blob by digest is looked for first. */
  private rememberCommit(repo: string, commit: string): void {
    const set = this.namedCommits.get(repo) ?? new Set<string>();
    set.add(commit);
    this.namedCommits.set(repo, set);
  }

  /**
   * A manifest or blob of `repo` this store does not know, looked for in the backend (another replica
   * converted it): the revisions tried are the commits clients named here, then every branch and tag of
   * the repo on the Hub (asked with the client's credentials), newest first as the Hub lists them; each
   * the backend has is taken and tagged here (Replication.lookUpRevisions). A revision the backend never
   * got is converted here. The commit that holds `digest`, if any.
   */
  private findInBackend(repo: string, digest: string, hub: HubParams): Promise<string | undefined> {
    return this.findRevisionWith(repo, hub, () => this.commitOwning(repo, digest));
  }

  /**
   * As findInBackend, for any test of what the store holds (`owner`: the commit it finds, once the
   * revisions are taken; the ModelPack view asks for its own digests so).
   */
  async findRevisionWith(repo: string, hub: HubParams, owner: () => Promise<string | undefined>): Promise<string | undefined> {
    if (!this.replication) return undefined;
    const commits = new Set(this.namedCommits.get(repo));
    const refs = await listRefs(hub, repo).catch(() => undefined);
    for (const r of [...(refs?.branches ?? []), ...(refs?.tags ?? [])]) commits.add(r.targetCommit);
    const inBackend = await this.replication.lookUpRevisions(repo, [...commits], owner);
    if (inBackend) return inBackend;
    // Nowhere in the backend (the replica that converted it died before its push landed): convert the
    // revisions a client named here, else the newest, here — the blob is the Hub's, as the manifest was.
    for (const commit of [...(this.namedCommits.get(repo) ?? commits)].slice(0, 2)) {
      await this.ensureConverted(repo, commit, hub).catch((err) => void this.log({ event: "convert-for-blob-failed", repo, commit, error: (err as Error).message }));
      const found = await owner();
      if (found) return found;
    }
    return undefined;
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

  /**
   * A blob of `name`: its size and a reader of its bytes, through the store's content interface
   * (fetching it first when only its source is known).
   */
  async blob(name: string, digest: string, clientToken: string | undefined): Promise<{ size: number; open(start: number, end: number): Readable }> {
    assertBlobDigest(name, digest);
    const hub = this.hubFor(clientToken);
    const repo = await this.names.repoFor(name, hub);
    const commit = (await this.commitOwning(repo, digest)) ?? (await this.findInBackend(repo, digest, hub));
    if (!commit) throw new OciError("BLOB_UNKNOWN", `${name}: no blob ${digest} in this model`);
    await this.access.authorize(repo, commit, hub);
    const store = this.opts.store;
    let size = await store.blobSize(digest);
    if (size === undefined) {
      // Under a store lease: a `cake gc` waits for it or is refused, so it never deletes the blob
      // about to be served (docs/architecture.md).
      await store.withLease(() => this.refetch(repo, commit, digest, hub));
      size = await store.blobSize(digest);
      if (size === undefined) throw new OciError("BLOB_UNKNOWN", `${name}: blob ${digest} could not be fetched`);
    } else this.metrics.cacheHits++;
    return { size, open: (start, end) => store.openBlob(digest, start, end) };
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
      await walkGraph(t.descriptor, (d) => store.readBlob(d.digest, MANIFEST_LIMIT), (d) => void map.set(d.digest, commit)).catch(() => {});
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
    const source = await this.sources.of(digest, repo);
    const store = this.opts.store;
    if (source) {
      const reader = new HubFileReader(hub, source.repo, source.commit, source.path);
      const file = hubFileSource(reader, digest.slice(7), source.end);
      const label = `hf://${source.repo}/${source.path} bytes ${source.begin}-${source.end}`;
      const { stats } = await transferBlobs(store, [digestJob(store, digest, source.end - source.begin, file, label, source.begin)]);
      this.metrics.hubFetched(stats.fetchedBytes);
      return;
    }
    await this.replication?.backend.fetchBlob(repo, commit, digest);
  }

  // ---- tags ----

  async tags(name: string, clientToken: string | undefined): Promise<string[]> {
    const hub = this.hubFor(clientToken);
    const repo = await this.names.repoFor(name, hub);
    await this.access.authorize(repo, undefined, hub);
    // The repo exists and may be read (authorize asked): a refs listing the Hub answers oddly (an
    // error of its own, entries without names) still leaves its default branch to list.
    const refs = await listRefs(hub, repo).catch((err: unknown) => {
      if (isTransient(err)) throw err;
      this.log({ event: "refs-listing-failed", repo, error: (err as Error).message });
      return { branches: [{ name: DEFAULT_BRANCH }], tags: [] };
    });
    const names = [...refs.branches, ...refs.tags].map((r) => r?.name).filter((n): n is string => typeof n === "string");
    return [...new Set(names.length ? names : [DEFAULT_BRANCH])].map(revisionToTag).filter(isValidTag).sort();
  }
}
