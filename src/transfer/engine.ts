/**
 * The one engine every command moves bytes with (STYLE.md: ranges -> fetch pool -> verify -> store):
 * blobs in, each cut into Range requests, one bounded pool for all of them, bytes written to the
 * store's ingest as they stream, each blob hashed and checked before it becomes visible.
 *
 * Resume falls out of the ingest journal: a range that was on disk is not fetched again, a range cut
 * by a dropped connection continues from its last byte.
 */
import { setMaxListeners } from "node:events";
import type { Readable } from "node:stream";
import { CakeError, isCakeError, oneLine } from "../errors.js";
import { isNetworkError, retryDelay, sleep, DEFAULT_RETRY } from "../http/retry.js";
import { byteWindow } from "../http/window.js";
import type { Store } from "../store/layout.js";
import { mergeRanges, type Ingest, type Range } from "../store/ingest.js";
import { DEFAULT_CHUNK, DEFAULT_CONCURRENCY, MIN_RANGE, RANGE_ATTEMPTS, WRITE_BATCH } from "./defaults.js";
import { Pool } from "./pool.js";
import { formatBytes, silentProgress, type ProgressSink } from "./progress.js";

export type OpenRange = (start: number, end: number, signal: AbortSignal) => Promise<{ body: Readable; start: number }>;

export interface BlobJob {
  /** Names the ingest (partial file + lock): a digest hex, or a Hub file range. */
  key: string;
  size: number;
  /** The digest the bytes must hash to, when the source says so (registries). */
  expected?: string;
  /** Names the blob in errors. */
  label: string;
  /** What this blob counts for in the progress line's items (e.g. the tensors it holds); default 1. */
  items?: number;
  /**
   * The digest, when the store already has this blob. Asked twice: first a look before the blob's
   * ingest lock is taken (which may use what the job read for its neighbours), then `underLock`,
   * which must look again (another process may have finished the blob while this one waited).
   */
  existing(underLock?: boolean): Promise<string | undefined>;
  /**
   * A stream of the blob's bytes from `start` to `end` (exclusive). The source may start earlier
   * (a 200 answer to a Range request): it says where its body starts.
   */
  open: OpenRange;
  /**
   * The blob is bytes [offset, offset + size) of a larger source (a Hub file) whose neighbouring
   * blobs are jobs too. Neighbours smaller than a chunk are then fetched with one Range request
   * over the source (`open`, in the source's coordinates): one round trip for many small tensors.
   */
  span?: { source: string; offset: number; open: OpenRange };
  /** Called once the blob is committed (e.g. to record which blob holds a Hub range). */
  done?(digest: string): Promise<void>;
}

export interface TransferOptions {
  concurrency?: number;
  chunkSize?: number;
  progress?: ProgressSink;
  signal?: AbortSignal;
  /** Told each blob's digest as soon as it is in the store (fetched or already there), by job index. */
  onBlob?: (index: number, digest: string) => void;
}

export interface TransferStats {
  fetchedBytes: number;
  skippedBlobs: number;
}

/**
 * Jobs in runs that one request can fetch: neighbours in the same span source, contiguous, each
 * smaller than a chunk, together at most a chunk. Any other job is a run of its own.
 */
export function spanRuns(jobs: readonly BlobJob[], chunk: number): number[][] {
  const runs: number[][] = [];
  let run: number[] = [];
  let bytes = 0;
  jobs.forEach((j, i) => {
    const prev = run.length ? jobs[run[run.length - 1]!]! : undefined;
    const joins =
      prev?.span && j.span && j.span.source === prev.span.source && j.span.offset === prev.span.offset + prev.size && j.size < chunk && prev.size < chunk && bytes + j.size <= chunk;
    if (!joins) {
      if (run.length) runs.push(run);
      run = [];
      bytes = 0;
    }
    run.push(i);
    bytes += j.size;
  });
  if (run.length) runs.push(run);
  return runs;
}

/** Fetches every job's blob into the store; returns the digests, aligned with `jobs`. */
export async function transferBlobs(store: Store, jobs: readonly BlobJob[], opts: TransferOptions = {}): Promise<{ digests: string[]; stats: TransferStats }> {
  const concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY;
  const chunk = opts.chunkSize ?? DEFAULT_CHUNK;
  const progress = opts.progress ?? silentProgress;
  const requests = new Pool(concurrency);
  const active = new Set<Fetch>();
  // A stolen half runs in another run's request slot; its own run waits for it (by target) before committing.
  const stolen = new Map<RangeTarget, Set<Promise<void>>>();
  const takeOver = (f: Fetch): Promise<void> => {
    const p = fetchRange(f, active, abort.signal, onBytes, firstByte);
    let set = stolen.get(f.target);
    if (!set) stolen.set(f.target, (set = new Set()));
    set.add(p);
    const forget = () => {
      set.delete(p);
      if (set.size === 0) stolen.delete(f.target);
    };
    p.then(forget, forget);
    return p;
  };
  /** While nothing waits for a request slot: split the slowest running streams, or wait for one to become worth it. */
  const helpAtTail = async () => {
    while (requests.waiting === 0 && open.waiting === 0) {
      const f = stealFrom(active);
      if (f) await takeOver(f);
      else if (mayStealLater(active)) await sleep(STEAL_POLL_MS, abort.signal);
      else break;
    }
  };
  // Runs open at once: enough to keep the request pool full while others hash and commit.
  const open = new Pool(concurrency * 2);
  // Of those, runs taking their ingests' locks and opening their files at once. That is ~9 file
  // operations per blob on libuv's 4 threads: 32 runs at once all finish late together (the first
  // request left 40 ms after the plan); a few at a time, the first runs' requests leave first.
  const opening = new Pool(OPENING);
  const firstByte = new FirstByteWait();
  const abort = new AbortController();
  setMaxListeners(0, abort.signal); // one listener per request in flight, by design
  const onOuterAbort = () => abort.abort(opts.signal!.reason);
  opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
  const stats: TransferStats = { fetchedBytes: 0, skippedBlobs: 0 };
  progress.addTotal(jobs.reduce((n, j) => n + j.size, 0), jobs.reduce((n, j) => n + (j.items ?? 1), 0));
  const onBytes = (n: number) => {
    stats.fetchedBytes += n;
    progress.bytes(n);
  };
  const skipped = (job: BlobJob, have = job.size) => {
    stats.skippedBlobs++;
    progress.bytes(have);
    unstarted -= have;
  };
  /**
   * Bytes no request has been given yet. A stream that frees up takes a piece of the chunk size
   * while there is plenty left, and a share of what is left (down to MIN_RANGE) near the end, so
   * that the streams finish together instead of waiting on the one that drew a whole chunk last.
   */
  let unstarted = jobs.reduce((n, j) => n + j.size, 0);
  const pieceSize = () => Math.min(chunk, Math.max(MIN_RANGE, Math.ceil(unstarted / concurrency)));

  let firstError: unknown;
  const fail = (err: unknown) => {
    firstError ??= err;
    if (!abort.signal.aborted) abort.abort(err);
  };

  /**
   * One run: the blobs the store lacks get their ingests (locked, resumable), every missing byte
   * range among them is fetched (neighbouring ranges of a span in one request), then each blob is
   * hashed, checked and committed. Settles each job's digest or error.
   */
  const runRun = async (run: number[]): Promise<string[]> => {
    const out: string[] = new Array(run.length);
    const todo: number[] = [];
    await Promise.all(
      run.map(async (i, k) => {
        const known = await jobs[i]!.existing();
        if (known) {
          skipped(jobs[i]!);
          out[k] = known;
        } else todo.push(k);
      }),
    );
    if (todo.length === 0) return out;
    todo.sort((a, b) => a - b); // locks are always taken in job order: two processes never deadlock
    await open.run(() =>
      gated(opening, (opened) => withIngests(store, todo.map((k) => jobs[run[k]!]!), async (ings) => {
        opened();
        const parts: SpanPart[] = [];
        for (const [t, k] of todo.entries()) {
          const job = jobs[run[k]!]!;
          const ing = ings[t]!;
          // Another process may have finished it while we waited for the lock.
          const again = await job.existing(true);
          if (again) {
            await ing.discard();
            skipped(job);
            out[k] = again;
            continue;
          }
          progress.bytes(ing.have);
          unstarted -= ing.have;
          parts.push({ k, job, ing, offset: job.span?.offset ?? 0 });
        }
        if (parts.length === 0) return;
        const single = parts.length === 1 && run.length === 1;
        const target: RangeTarget = single ? parts[0]!.ing : new SpanTarget(parts);
        const openRange: OpenRange = single ? parts[0]!.job.open : parts[0]!.job.span!.open;
        const label = single ? parts[0]!.job.label : `${parts[0]!.job.label} (and ${parts.length - 1} neighbours)`;
        // The missing bytes, handed out piece by piece as streams free up (one task per smallest piece:
        // tasks that find nothing left end at once).
        const work = target.missing();
        const step = Math.min(chunk, MIN_RANGE);
        const tasks = work.reduce((n, [a, b]) => n + Math.ceil((b - a) / step), 0);
        await Promise.all(
          Array.from(
            { length: tasks },
            () =>
              new Promise<void>((fetched, failed) => {
                requests
                  .run(async () => {
                    try {
                      if (abort.signal.aborted) throw abort.signal.reason;
                      const r = carve(work, pieceSize(), step);
                      if (r) {
                        unstarted -= r[1] - r[0];
                        const f = new Fetch(label, target, r, openRange);
                        const done = fetchRange(f, active, abort.signal, onBytes, firstByte);
                        const finished = done.then(() => false);
                        finished.catch(() => {}); // reported through `done`
                        // Once the rest of this piece takes less than a request's wait for its first byte,
                        // the slot goes to the next piece (if one waits): its request goes out now and its
                        // bytes start about when these end, instead of the stream idling for the wait.
                        if (await Promise.race([finished, f.nearlyDone.then(() => (requests.waiting > 0 ? true : finished))])) {
                          done.then(() => fetched(), failed);
                          return;
                        }
                      }
                      fetched();
                    } catch (err) {
                      failed(err);
                      return;
                    }
                    // This run's share is in (its commit does not wait for what follows). Nothing left to
                    // start: the slot helps the slowest stream of any run finish instead of idling.
                    await helpAtTail();
                  })
                  .catch(() => {}); // a stolen half's error reaches the run it belongs to (see `stolen`)
              }),
          ),
        );
        // Halves of this run's ranges that other streams took over may still be running.
        for (let left = stolen.get(target); left?.size; left = stolen.get(target)) await Promise.all(left);
        await Promise.all(
          parts.map(async ({ k, job, ing }) => {
            const digest = await store.commit(ing, job.expected, job.label);
            await job.done?.(digest);
            out[k] = digest;
          }),
        );
      })),
    );
    return out;
  };

  const results: Promise<string>[] = new Array(jobs.length);
  for (const run of spanRuns(jobs, chunk)) {
    const out = runRun(run);
    run.forEach((i, k) => (results[i] = out.then((o) => o[k]!)));
  }
  const settled = await Promise.allSettled(
    results.map((p, i) =>
      p.catch((err) => {
        throw named(jobs[i]!, err);
      }).then(
        (d) => {
          progress.item(jobs[i]!.items ?? 1);
          opts.onBlob?.(i, d);
          return d;
        },
        (err) => {
          fail(err);
          throw err;
        },
      ),
    ),
  );
  opts.signal?.removeEventListener("abort", onOuterAbort);
  progress.done();
  if (firstError !== undefined) throw firstError;
  return { digests: settled.map((r) => (r as PromiseFulfilledResult<string>).value), stats };
}

/**
 * Takes the first `size` bytes (or fewer) off the front of `work`, and the rest of that range if less
 * than `step` or half a piece would be left: an 11 MB tensor is one request of 11 MB, not 8 MiB and
 * then 2.6 MB (a request costs a round trip and the server's time to first byte, ~50 ms at 30 ms).
 */
function carve(work: Range[], size: number, step: number): Range | undefined {
  const first = work[0];
  if (!first) return undefined;
  const piece: Range = [first[0], Math.min(first[1], first[0] + size)];
  if (first[1] - piece[1] < Math.max(step, size / 2)) piece[1] = first[1];
  if (piece[1] === first[1]) work.shift();
  else first[0] = piece[1];
  return piece;
}

/** Runs taking their ingests (locks, files) at once: see `opening` in transferBlobs. */
const OPENING = 4;

/** Runs `fn`, holding a slot of `gate` until `fn` calls `ready` (or settles): only its first phase is bounded. */
function gated<T>(gate: Pool, fn: (ready: () => void) => Promise<T>): Promise<T> {
  let result!: Promise<T>;
  const firstPhase = gate.run(
    () =>
      new Promise<void>((ready) => {
        result = fn(ready);
        result.then(() => ready(), () => ready());
      }),
  );
  return firstPhase.then(() => result);
}

/** Runs `fn` with the ingests of `jobs` all held (taken in order, released in reverse). */
function withIngests<T>(store: Store, jobs: BlobJob[], fn: (ings: Ingest[]) => Promise<T>, held: Ingest[] = []): Promise<T> {
  if (held.length === jobs.length) return fn(held);
  const job = jobs[held.length]!;
  return store.withIngest(job.key, job.size, (ing) => withIngests(store, jobs, fn, [...held, ing]));
}

/** An error that names the blob it happened to: "hf://acme/m/model.safetensors bytes 0-99: socket hang up". */
function named(job: BlobJob, err: unknown): unknown {
  if (err instanceof CakeError || (err as { name?: string })?.name === "AbortError") return err;
  const code = (err as { code?: string })?.code;
  const what = code === "ENOSPC" ? "no space left on device" : oneLine(err);
  return new CakeError(isNetworkError(err) ? "E_NETWORK" : "E_IO", `${job.label}: ${what}`, { cause: err });
}

/** Where a range's bytes go: one ingest, or the ingests of a run of neighbouring blobs. */
interface RangeTarget {
  /** The byte ranges not on disk yet, in the target's coordinates. */
  missing(): Range[];
  write(pos: number, parts: Buffer[], rangeStart: number, sinceJournal: { n: number }): Promise<void>;
  record(r: Range): Promise<void>;
}

interface SpanPart {
  k: number;
  job: BlobJob;
  ing: Ingest;
  /** Where the blob starts in the span source. */
  offset: number;
}

/**
 * Several ingests laid side by side at their offsets in one source: ranges in the source's
 * coordinates are cut at the blobs' edges, each piece written and journaled in its own ingest.
 */
class SpanTarget implements RangeTarget {
  /** Journal counters per attempt (fetchRange's `since`) and ingest. */
  private readonly since = new WeakMap<object, { n: number }[]>();
  constructor(private readonly parts: SpanPart[]) {}

  /** The blobs' missing ranges in source coordinates; ranges meeting at a blob edge merge. */
  missing(): Range[] {
    return mergeRanges(this.parts.flatMap((p) => p.ing.missing().map(([a, b]): Range => [p.offset + a, p.offset + b])));
  }

  async write(pos: number, parts: Buffer[], rangeStart: number, since: { n: number }): Promise<void> {
    let counters = this.since.get(since);
    if (!counters) this.since.set(since, (counters = this.parts.map(() => ({ n: 0 }))));
    let at = pos;
    let pieces = parts;
    for (const [i, p] of this.parts.entries()) {
      const end = p.offset + p.ing.size;
      if (pieces.length === 0) break;
      if (end <= at) continue;
      if (p.offset > at) throw new CakeError("E_SIZE", `${p.job.label}: bytes at ${at} belong to no blob of this run`);
      const [mine, rest] = splitParts(pieces, end - at);
      const len = mine.reduce((n, b) => n + b.length, 0);
      await p.ing.write(at - p.offset, mine, Math.max(rangeStart, p.offset) - p.offset, counters[i]!);
      at += len;
      pieces = rest;
    }
  }

  async record([a, b]: Range): Promise<void> {
    for (const p of this.parts) {
      const s = Math.max(a, p.offset);
      const e = Math.min(b, p.offset + p.ing.size);
      if (e > s) await p.ing.record([s - p.offset, e - p.offset]);
    }
  }
}

/** The first `n` bytes of `parts`, and the rest (no copies: subarrays). */
function splitParts(parts: Buffer[], n: number): [Buffer[], Buffer[]] {
  const head: Buffer[] = [];
  for (let i = 0; i < parts.length; i++) {
    const b = parts[i]!;
    if (n >= b.length) {
      head.push(b);
      n -= b.length;
      continue;
    }
    if (n > 0) head.push(b.subarray(0, n));
    return [head, [b.subarray(n), ...parts.slice(i + 1)]];
  }
  return [head, []];
}

/** A stream's piece of work: [pos, end) of a target. `end` may shrink while it runs (stealFrom). */
class Fetch {
  /** Written up to here. */
  pos: number;
  /** Received up to here (written, or gathered for the next write). */
  seen: number;
  end: number;
  /** The source honoured the Range request (a 200 answer streams from 0: never split those). */
  ranged = false;
  /** When this attempt's body started, and where: its rate so far says how long the rest will take. */
  startedAt = 0;
  startedPos = 0;
  /** Settles when the rest takes less than the link's wait for a first byte (see FirstByteWait). */
  readonly nearlyDone: Promise<void>;
  signalNearlyDone!: () => void;
  constructor(
    readonly label: string,
    readonly target: RangeTarget,
    range: Range,
    readonly open: OpenRange,
  ) {
    [this.pos, this.end] = range;
    this.seen = this.pos;
    this.nearlyDone = new Promise((resolve) => (this.signalNearlyDone = resolve));
  }
}

/** A stream's rate means something after this long (ms): its first bytes may come with the headers. */
const RATE_AFTER_MS = 20;

/**
 * How long a request of this transfer waits for its first byte (a moving average, ms): what a
 * stream would idle between two pieces if it asked for the next only after the last byte.
 */
class FirstByteWait {
  ms = 0;
  observe(ms: number): void {
    this.ms = this.ms ? this.ms + 0.25 * (ms - this.ms) : ms;
  }
}

/** A stolen half must be worth a request of its own: at least this many bytes... */
const MIN_STEAL = MIN_RANGE;
/**
 * ...and the stream it is taken from must have run this long (ms), so that its rate is known, and
 * need at least as long again for the rest at that rate. Splitting cuts that stream's connection,
 * and the bytes already in flight past the cut are lost: worth it on a slow stream at the tail,
 * never on a fast one (an 8 MiB range at 40 MB/s is over in 0.2 s: never split).
 */
const STEAL_AFTER_MS = 500;

/** How often an idle stream looks again for a stream worth splitting. */
const STEAL_POLL_MS = 100;

/** Some running fetch has enough left that it may be worth splitting once its rate shows. */
const mayStealLater = (active: Set<Fetch>) => [...active].some((f) => f.ranged && f.end - f.seen >= 2 * MIN_STEAL);

/** How long `f` needs for the rest at its rate so far (ms); 0 when it has no rate yet. */
function timeLeft(f: Fetch, now: number): number {
  const got = f.seen - f.startedPos;
  const took = now - f.startedAt;
  return got > 0 && took > 0 ? ((f.end - f.seen) * took) / got : 0;
}

/**
 * Splits the running fetch that needs the longest for its rest: it stops halfway, the second half is
 * returned for an idle stream. Near the end of a transfer over slow connections this keeps every
 * stream busy instead of waiting on the one that drew the biggest range.
 */
function stealFrom(active: Set<Fetch>): Fetch | undefined {
  const now = performance.now();
  let victim: Fetch | undefined;
  for (const f of active) if (f.ranged && (!victim || timeLeft(f, now) > timeLeft(victim, now))) victim = f;
  if (!victim || victim.end - victim.seen < 2 * MIN_STEAL || now - victim.startedAt < STEAL_AFTER_MS || timeLeft(victim, now) < STEAL_AFTER_MS) return undefined;
  const mid = victim.seen + Math.floor((victim.end - victim.seen) / 2);
  const stolen = new Fetch(victim.label, victim.target, [mid, victim.end], victim.open);
  victim.end = mid;
  return stolen;
}

/** Fetches [pos, end) of `f` into its target, continuing after dropped connections. */
async function fetchRange(f: Fetch, active: Set<Fetch>, signal: AbortSignal, onBytes: (n: number) => void, firstByte: FirstByteWait): Promise<void> {
  active.add(f);
  const from = f.pos;
  let sent = 0;
  try {
    for (let attempt = 1; ; attempt++) {
      sent++;
      const since = { n: 0 };
      const rangeStart = f.pos;
      f.seen = f.pos;
      try {
        const asked = performance.now();
        const { body, start: bodyStart } = await f.open(f.pos, f.end, signal);
        f.ranged = bodyStart === f.pos;
        f.startedAt = performance.now();
        firstByte.observe(f.startedAt - asked);
        f.startedPos = f.pos;
        // Network chunks are ~64 KiB; the disk takes them WRITE_BATCH at a time, in one vectored write (no copy).
        let batch: Buffer[] = [];
        let batchAt = f.pos;
        let batchLen = 0;
        const flush = async () => {
          if (batchLen === 0) return;
          await f.target.write(batchAt, batch, rangeStart, since);
          f.pos = batchAt + batchLen;
          onBytes(batchLen);
          batch = [];
          batchLen = 0;
        };
        try {
          for await (const { at, data } of byteWindow(body, bodyStart, f.pos, f.end)) {
            // The end may have moved closer (a stolen half): keep only what is still ours, and stop there.
            const keep = Math.min(data.length, f.end - at);
            if (keep > 0) {
              if (batchLen === 0) batchAt = at;
              batch.push(keep < data.length ? data.subarray(0, keep) : data);
              batchLen += keep;
              f.seen = at + keep;
              const now = performance.now();
              if (now - f.startedAt >= RATE_AFTER_MS && timeLeft(f, now) <= firstByte.ms) f.signalNearlyDone();
            }
            if (batchLen >= WRITE_BATCH || at + keep >= f.end) await flush();
            if (at + data.length >= f.end) break;
          }
        } finally {
          await flush(); // bytes that arrived before a drop are good: keep them
        }
        if (f.pos < f.end) throw new CakeError("E_SIZE", `${f.label}: stream ended at byte ${f.pos}, expected ${f.end}`);
        await f.target.record([rangeStart, f.end]);
        return;
      } catch (err) {
        await f.target.record([rangeStart, f.pos]).catch(() => {});
        const retryable = isNetworkError(err) || isCakeError(err, "E_SIZE") || (err as { retryable?: boolean }).retryable === true;
        if (signal.aborted || !retryable || attempt >= RANGE_ATTEMPTS) {
          if (signal.aborted && signal.reason !== err) throw signal.reason ?? err;
          if (isCakeError(err) || !retryable) throw err;
          // The stream kept breaking: one line that says how far it got, as src/http says it for its requests.
          const what = isNetworkError(err) ? "connection closed" : oneLine(err);
          throw new CakeError("E_NETWORK", `${f.label}: ${what} after ${formatBytes(f.pos - from)} of ${formatBytes(f.end - from)} (${sent} tries)`, { cause: err });
        }
        await sleep(retryDelay(attempt, DEFAULT_RETRY, (err as { retryAfter?: string }).retryAfter), signal);
        // A stream that made progress before it dropped earns a fresh budget of attempts.
        if (f.pos > rangeStart) attempt = 0;
      }
    }
  } finally {
    active.delete(f);
  }
}
