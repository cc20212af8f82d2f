/**
 * The proxy's one storage facade (verdaccio's shape): routes ask it for manifests, blobs and tags;
 * it serves from the local store first, else converts the Hub revision (the same `pullHf` as
 * `cake pull hf://…`, so the same manifest digest), else fetches a blob by its known Hub range or
 * from the backend registry — always verified before a byte is served.
 *
 * Its parts by role: access.ts (may this client read this repo, asked of the Hub), blob-sources.ts
 * (where each converted blob lies on the Hub, for refetches), backend.ts (the registry replicas share).
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { hostname } from "node:os";
import type { Readable } from "node:stream";
import {
  ANN,
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
import { Backend, type Claim } from "./backend.js";
import { BlobSources } from "./blob-sources.js";
import { Metrics } from "./metrics.js";
import { DEFAULT_BRANCH, Names, assertBlobDigest, isValidTag, isWellFormedDigest, revisionToTag, tagToRevision } from "./names.js";
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
/** Revisions of one repo looked for in the backend for a digest this replica does not know. */
const MAX_BACKEND_REVISIONS = 32;
/**
 * How long a claim holds without renewal. Its owner renews it every third of that while it converts
 * and pushes (a large model over a slow link takes as long as it takes); a dead owner's claim ends
 * within this, and a waiting replica converts instead.
 */
const CLAIM_TTL_MS = 30_000;
/** How long a stopping replica waits for its cancelled pushes to clean up (Kubernetes' default grace period is 30 s). */
const STOP_WAIT_MS = 10_000;
/** How long a replica that wrote a claim waits before reading it again (twice its write's time, within these bounds). */
const CLAIM_SETTLE_MIN_MS = 250;
const CLAIM_SETTLE_MAX_MS = 2_000;
/** How often a replica waiting on another's conversion looks for its manifest in the backend. */
const CLAIM_POLL_MS = 500;

export class ProxyService {
  readonly metrics = new Metrics();
  readonly names: Names;
  readonly conversions = new Map<string, { status: Conversion; done: Promise<string> }>();
  /** May this client read this repo (also asked by the ModelPack view, modelpack-view.ts). */
  readonly access: AccessCheck;
  /** The registry replicas share, when there is one. */
  private readonly backend?: Backend;
  private readonly owners = new Map<string, { version: number; map: Map<string, string> }>();
  /** digest -> where each converted repo holds it on the Hub. */
  private readonly sources: BlobSources;
  /** repo -> commits clients resolved a tag to here. */
  private readonly namedCommits = new Map<string, Set<string>>();
  private readonly backendPushes = new Set<Promise<void>>();
  /** Claims this replica holds (converting, then pushing), renewed until the push lands. */
  private readonly renewals = new Map<string, { timer: NodeJS.Timeout; repo: string; commit: string }>();
  private stopped = false;
  /** Stops background pushes in flight when the service stops (their upload sessions are cancelled). */
  private readonly stopping = new AbortController();
  /** Names this replica in its conversion claims in the backend. */
  private readonly replicaId = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;

  constructor(readonly opts: ServiceOptions) {
    this.names = new Names(opts.aliases ?? {});
    this.sources = new BlobSources(opts.store.root);
    this.access = new AccessCheck(opts.store, opts.accessTtlMs);
    if (opts.backend) this.backend = new Backend(opts.backend, opts.backendAccess, opts.store, (e) => this.log(e), (n) => this.metrics.backendFetched(n));
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
    if (this.backend) {
      const got = await this.leased(() => this.backend!.fetchConverted(repo, commit)).catch((err) => {
        this.log({ event: "backend-miss", ref, error: (err as Error).message });
        return undefined;
      });
      if (got) {
        this.metrics.backendHits++;
        return got;
      }
      this.metrics.backendMisses++;
      const other = await this.claimOrWait(repo, commit, ref);
      if (other) return other;
      this.holdClaim(repo, commit);
    }
    try {
      return await this.convertFromHub(repo, commit, hub, status);
    } catch (err) {
      // Released at once, so a replica waiting on it converts instead of waiting out the expiry.
      this.dropClaim(repo, commit);
      if (this.backend) await this.backend.writeClaim(repo, commit, { owner: this.replicaId, expires: 0 }).catch(() => {});
      throw err;
    }
  }

  /** Renews this replica's claim on `repo@commit` every third of its life until dropClaim. */
  private holdClaim(repo: string, commit: string): void {
    const ttl = this.opts.claimTtlMs ?? CLAIM_TTL_MS;
    const key = formatHfRef({ repo, revision: commit });
    this.dropClaim(repo, commit);
    const renew = () => void this.backend?.writeClaim(repo, commit, { owner: this.replicaId, expires: Date.now() + ttl }).catch(() => {});
    const timer = setInterval(renew, Math.max(1000, ttl / 3));
    timer.unref();
    this.renewals.set(key, { timer, repo, commit });
  }

  private dropClaim(repo: string, commit: string): void {
    const key = formatHfRef({ repo, revision: commit });
    clearInterval(this.renewals.get(key)?.timer);
    this.renewals.delete(key);
  }

  /**
   * Claims the conversion of `repo@commit` in the backend, or waits for the replica that holds the claim:
   * the manifest digest once that replica's push lands, or undefined when this replica is to convert
   * (its claim read back as its own twice, a settling time apart, or the other's expired or was
   * released). Registries have no compare-and-swap: two replicas whose writes are further apart than
   * the settling time may each read back their own claim and both convert; that costs the Hub bytes
   * twice, never a wrong byte (the same commit converts to the same
   * digests, and pushes of equal content are idempotent). A backend that fails here is no reason not
   * to serve: this replica converts.
   */
  private async claimOrWait(repo: string, commit: string, ref: string): Promise<string | undefined> {
    const backend = this.backend!;
    for (;;) {
      const claim = await backend.readClaim(repo, commit).catch(() => undefined);
      if (claim && this.isOthers(claim)) {
        const got = await this.waitForOther(repo, commit, ref);
        if (got) return got;
        continue;
      }
      const mine = { owner: this.replicaId, expires: Date.now() + (this.opts.claimTtlMs ?? CLAIM_TTL_MS) };
      const began = Date.now();
      const ok = await backend.writeClaim(repo, commit, mine).then(
        () => true,
        (err) => void this.log({ event: "backend-claim-failed", ref, error: (err as Error).message }),
      );
      if (!ok) return undefined;
      let read = await backend.readClaim(repo, commit).catch(() => undefined);
      if (read && this.isOthers(read)) continue;
      // A replica that looked before this claim was there may be writing its own now: wait as long as
      // such a write takes, then look again — the last writer holds the claim, and both see it.
      await sleep(Math.min(CLAIM_SETTLE_MAX_MS, Math.max(CLAIM_SETTLE_MIN_MS, 2 * (Date.now() - began))));
      read = await backend.readClaim(repo, commit).catch(() => undefined);
      if (!read || !this.isOthers(read)) return undefined;
    }
  }

  /** Whether a claim holds this replica off: another's, not expired. */
  private isOthers(claim: Claim): boolean {
    return claim.owner !== this.replicaId && claim.expires > Date.now();
  }

  /**
   * Waits while another replica's claim on `repo@commit` holds, polling the backend for the manifest:
   * its digest once taken here, or undefined when the claim ended (expired, released) without one.
   */
  private async waitForOther(repo: string, commit: string, ref: string): Promise<string | undefined> {
    const backend = this.backend!;
    for (let polls = 0; ; polls++) {
      const got = await this.leased(() => backend.fetchConverted(repo, commit)).catch((err) => void this.log({ event: "backend-miss", ref, error: (err as Error).message }));
      if (got) return got;
      const claim = await backend.readClaim(repo, commit).catch(() => undefined);
      if (!claim || !this.isOthers(claim)) return undefined;
      if (!polls) this.log({ event: "backend-wait", ref, owner: claim.owner });
      await new Promise((resolve) => setTimeout(resolve, CLAIM_POLL_MS));
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
        ...(this.opts.concurrency ? { concurrency: this.opts.concurrency } : {}),
        // What a replica that died converting this revision pushed already comes from the backend, then the operator's index.
        index: [...(this.backend ? [this.backend.resumeSource(commit)] : []), ...(this.opts.index ? [{ prefix: this.opts.index, access: this.opts.backendAccess ?? {} }] : [])],
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
    if (this.backend) this.pushInBackground(repo, commit);
    return r.manifestDigest;
  }

  /**
   * Pushes `repo@commit` to the backend, retried with backoff (1 s doubling to 1 min) until it lands or
   * the service stops; each try holds a store lease, so gc never takes a blob from under it.
   */
  private pushInBackground(repo: string, commit: string): void {
    const ref = formatHfRef({ repo, revision: commit });
    const backend = this.backend!;
    const attempt = async (): Promise<void> => {
      for (let wait = 1000; !this.stopped; wait = Math.min(wait * 2, 60_000)) {
        try {
          await this.leased(() => backend.push(repo, commit, this.stopping.signal));
          this.dropClaim(repo, commit); // the manifest tag is there: waiters take it
          return;
        } catch (err) {
          if (this.stopped) return;
          this.metrics.uploadFailures++;
          this.log({ event: "backend-push-failed", ref, error: (err as Error).message, retryInMs: wait });
          await sleep(wait, undefined, { signal: this.stopping.signal, ref: false }).catch(() => {});
        }
      }
    };
    this.metrics.uploadQueued();
    const p = attempt().finally(() => {
      this.backendPushes.delete(p);
      this.metrics.uploadEnded(true); // its failed tries were counted as they happened
    });
    this.backendPushes.add(p);
  }

  /** Resolves when every background push to the backend has landed (or given up on stop). */
  async backendSettled(): Promise<void> {
    while (this.backendPushes.size) await Promise.all(this.backendPushes);
  }

  /**
   * Stops the background pushes: a push in flight is cancelled, its upload sessions deleted (no
   * orphan `_uploads` in the backend's storage), and each claim this replica holds is released, so
   * another replica takes the revision over at once, resuming from what landed. Resolves when done.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.stopping.abort(new Error("the proxy is stopping"));
    const claims = [...this.renewals.values()];
    for (const c of claims) clearInterval(c.timer);
    this.renewals.clear();
    // Bounded: a backend that is down must not hold a stopping replica (its orchestrator kills it at the grace period's end).
    await Promise.race([this.backendSettled(), sleep(STOP_WAIT_MS, undefined, { ref: false })]);
    await Promise.all(claims.map((c) => this.backend?.writeClaim(c.repo, c.commit, { owner: this.replicaId, expires: 0 }).catch(() => {})));
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
   * the repo on the Hub (asked with the client's credentials), newest first as the Hub lists them, at
   * most MAX_BACKEND_REVISIONS. Each revision the backend has is taken (manifest, config, recipe) and
   * tagged here, so its blobs are known from then on; a revision the backend never got is converted
   * here. The commit that holds `digest`, if any.
   */
  private async findInBackend(repo: string, digest: string, hub: HubParams): Promise<string | undefined> {
    if (!this.backend) return undefined;
    const commits = new Set(this.namedCommits.get(repo));
    const refs = await listRefs(hub, repo).catch(() => undefined);
    for (const r of [...(refs?.branches ?? []), ...(refs?.tags ?? [])]) commits.add(r.targetCommit);
    for (const commit of [...commits].slice(0, MAX_BACKEND_REVISIONS)) {
      const ref = formatHfRef({ repo, revision: commit });
      if (await this.opts.store.resolve(ref)) continue;
      // A revision another replica is converting (its push still in flight) is waited for, not missed.
      const got = await this.waitForOther(repo, commit, ref);
      const owner = got && (await this.commitOwning(repo, digest));
      if (owner) return owner;
    }
    // Nowhere in the backend (the replica that converted it died before its push landed): convert the
    // revisions a client named here, else the newest, here — the blob is the Hub's, as the manifest was.
    for (const commit of [...(this.namedCommits.get(repo) ?? commits)].slice(0, 2)) {
      await this.ensureConverted(repo, commit, hub).catch((err) => void this.log({ event: "convert-for-blob-failed", repo, commit, error: (err as Error).message }));
      const owner = await this.commitOwning(repo, digest);
      if (owner) return owner;
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
      await this.leased(() => this.refetch(repo, commit, digest, hub));
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
    await this.backend?.fetchBlob(repo, commit, digest);
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

  /**
   * Runs `fn`, which writes blobs (and tags), under a store lease: a `cake gc` waits for it or is
   * refused, so it never deletes what `fn` is about to serve or tag (docs/architecture.md).
   */
  private leased<T>(fn: () => Promise<T>): Promise<T> {
    return this.opts.store.withLease(fn);
  }
}
