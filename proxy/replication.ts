/**
 * How replicas share the work of converting over the backend registry (`--backend`): a revision
 * another replica converted is taken from the backend; one no replica has is claimed there, so only
 * one converts it while the others wait for its push; what this replica converted is pushed there in
 * the background. The service (service.ts) holds one of these when a backend is configured; the
 * registry-facing part (claims as artifacts, push, fetch) is backend.ts.
 */
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { formatHfRef, type Store } from "../src/index.js";
import type { Backend, Claim } from "./backend.js";
import type { Metrics } from "./metrics.js";

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

export interface ReplicationParts {
  backend: Backend;
  store: Store;
  metrics: Metrics;
  log: (event: Record<string, unknown>) => void;
  /** The service's claim lifetime (ServiceOptions.claimTtlMs), read at each claim: it may be changed while the service runs. */
  claimTtlMs: () => number | undefined;
}

export class Replication {
  /** The registry replicas share. */
  readonly backend: Backend;
  private readonly store: Store;
  private readonly metrics: Metrics;
  private readonly log: (event: Record<string, unknown>) => void;
  private readonly claimTtlMs: () => number | undefined;
  private readonly backendPushes = new Set<Promise<void>>();
  /** Claims this replica holds (converting, then pushing), renewed until the push lands. */
  private readonly renewals = new Map<string, { timer: NodeJS.Timeout; repo: string; commit: string }>();
  private stopped = false;
  /** Stops background pushes in flight when the service stops (their upload sessions are cancelled). */
  private readonly stopping = new AbortController();
  /** Names this replica in its conversion claims in the backend. */
  private readonly replicaId = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;

  constructor(parts: ReplicationParts) {
    this.backend = parts.backend;
    this.store = parts.store;
    this.metrics = parts.metrics;
    this.log = parts.log;
    this.claimTtlMs = parts.claimTtlMs;
  }

  private claimTtl(): number {
    return this.claimTtlMs() ?? CLAIM_TTL_MS;
  }

  /**
   * Before this replica converts `repo@commit`: the manifest digest when another replica converted it
   * (now, or while this one waited on its claim), taken from the backend and tagged here; undefined
   * when this replica is to convert it, holding the claim (renewed until its push lands, or release).
   */
  async takeOrClaim(repo: string, commit: string, ref: string): Promise<string | undefined> {
    const got = await this.leased(() => this.backend.fetchConverted(repo, commit)).catch((err) => {
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
    return undefined;
  }

  /** Releases this replica's claim on `repo@commit` (its conversion failed): renewals stop and the claim in the backend expires now. */
  async release(repo: string, commit: string): Promise<void> {
    this.dropClaim(repo, commit);
    await this.backend.writeClaim(repo, commit, { owner: this.replicaId, expires: 0 }).catch(() => {});
  }

  /** Renews this replica's claim on `repo@commit` every third of its life until dropClaim. */
  private holdClaim(repo: string, commit: string): void {
    const ttl = this.claimTtl();
    const key = formatHfRef({ repo, revision: commit });
    this.dropClaim(repo, commit);
    const renew = () => void this.backend.writeClaim(repo, commit, { owner: this.replicaId, expires: Date.now() + ttl }).catch(() => {});
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
    const backend = this.backend;
    for (;;) {
      const claim = await this.claimOn(repo, commit);
      if (claim && this.isOthers(claim)) {
        const got = await this.waitForOther(repo, commit, ref);
        if (got) return got;
        continue;
      }
      const mine = { owner: this.replicaId, expires: Date.now() + this.claimTtl() };
      const began = Date.now();
      const ok = await backend.writeClaim(repo, commit, mine).then(
        () => true,
        (err) => void this.log({ event: "backend-claim-failed", ref, error: (err as Error).message }),
      );
      if (!ok) return undefined;
      let read = await this.claimOn(repo, commit);
      if (read && this.isOthers(read)) continue;
      // A replica that looked before this claim was there may be writing its own now: wait as long as
      // such a write takes, then look again — the last writer holds the claim, and both see it.
      await sleep(Math.min(CLAIM_SETTLE_MAX_MS, Math.max(CLAIM_SETTLE_MIN_MS, 2 * (Date.now() - began))));
      read = await this.claimOn(repo, commit);
      if (!read || !this.isOthers(read)) return undefined;
    }
  }

  /** The claim on `repo@commit` as the backend has it now; none when the backend fails to say (this replica converts). */
  private claimOn(repo: string, commit: string): Promise<Claim | undefined> {
    return this.backend.readClaim(repo, commit).catch(() => undefined);
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
    const backend = this.backend;
    for (let polls = 0; ; polls++) {
      const got = await this.leased(() => backend.fetchConverted(repo, commit)).catch((err) => void this.log({ event: "backend-miss", ref, error: (err as Error).message }));
      if (got) return got;
      const claim = await this.claimOn(repo, commit);
      if (!claim || !this.isOthers(claim)) return undefined;
      if (!polls) this.log({ event: "backend-wait", ref, owner: claim.owner });
      await sleep(CLAIM_POLL_MS);
    }
  }

  /**
   * Takes from the backend each of `commits` (revisions of `repo`, in order, at most
   * MAX_BACKEND_REVISIONS) the store lacks — its manifest, config and recipe, tagged here, so its blobs
   * are known from then on — until `owner` finds the commit that holds what is looked for; that commit.
   */
  async lookUpRevisions(repo: string, commits: string[], owner: () => Promise<string | undefined>): Promise<string | undefined> {
    for (const commit of commits.slice(0, MAX_BACKEND_REVISIONS)) {
      const ref = formatHfRef({ repo, revision: commit });
      if (await this.store.resolve(ref)) continue;
      // A revision another replica is converting (its push still in flight) is waited for, not missed.
      const got = await this.waitForOther(repo, commit, ref);
      const found = got && (await owner());
      if (found) return found;
    }
    return undefined;
  }

  /**
   * Pushes `repo@commit` to the backend, retried with backoff (1 s doubling to 1 min) until it lands or
   * the service stops; each try holds a store lease, so gc never takes a blob from under it.
   */
  pushInBackground(repo: string, commit: string): void {
    const ref = formatHfRef({ repo, revision: commit });
    const backend = this.backend;
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
    await Promise.all(claims.map((c) => this.backend.writeClaim(c.repo, c.commit, { owner: this.replicaId, expires: 0 }).catch(() => {})));
  }

  /**
   * Runs `fn`, which writes blobs (and tags), under a store lease: a `cake gc` waits for it or is
   * refused, so it never deletes what `fn` is about to serve or tag (docs/architecture.md).
   */
  private leased<T>(fn: () => Promise<T>): Promise<T> {
    return this.store.withLease(fn);
  }
}
