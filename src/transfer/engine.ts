/**
 * The one engine every command moves bytes with (STYLE.md: ranges -> fetch pool -> verify -> store):
 * blobs in, each cut into Range requests, one bounded pool for all of them, bytes written to the
 * store's ingest as they stream, each blob hashed and checked before it becomes visible.
 *
 * Resume falls out of the ingest journal: a range that was on disk is not fetched again, a range cut
 * by a dropped connection continues from its last byte.
 *
 * Here the plan and the pools; a run's shared request and ingests in runs.ts; one stream's range,
 * its retries and the tail's splitting in fetch-range.ts.
 */
import { setMaxListeners } from "node:events";
import type { Readable } from "node:stream";
import { CakeError, oneLine } from "../errors.js";
import { receiveOffThread } from "../http/receive-workers.js";
import { isNetworkError, sleep } from "../http/retry.js";
import type { Store } from "../store/layout.js";
import { DEFAULT_CHUNK, DEFAULT_CONCURRENCY, MIN_RANGE } from "./defaults.js";
import { Fetch, FirstByteWait, STEAL_POLL_MS, fetchRange, mayStealLater, stealFrom, type RangeTarget } from "./fetch-range.js";
import { Pool } from "./pool.js";
import { StreamRamp } from "./ramp.js";
import { silentProgress, type ProgressSink } from "./progress.js";
import { SpanTarget, carve, gated, spanRuns, withIngests, type SpanPart } from "./runs.js";

export { spanRuns } from "./runs.js";

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
  /** Requests at once, fixed; without it the transfer starts with the default and adds streams while they help (ramp.ts). */
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
  /** Requests allowed at once at the end (more than the default when more streams raised the rate). */
  streams?: number;
}

/** Fetches every job's blob into the store; returns the digests, aligned with `jobs`. */
export async function transferBlobs(store: Store, jobs: readonly BlobJob[], opts: TransferOptions = {}): Promise<{ digests: string[]; stats: TransferStats }> {
  const chunk = opts.chunkSize ?? DEFAULT_CHUNK;
  const progress = opts.progress ?? silentProgress;
  const requests = new Pool(opts.concurrency ?? DEFAULT_CONCURRENCY);
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
  const open = new Pool(requests.size * 2);
  // Of those, runs taking their ingests' locks and opening their files at once. That is ~9 file
  // operations per blob on libuv's 4 threads: 32 runs at once all finish late together (the first
  // request left 40 ms after the plan); a few at a time, the first runs' requests leave first.
  const opening = new Pool(OPENING);
  const firstByte = new FirstByteWait();
  const abort = new AbortController();
  setMaxListeners(0, abort.signal); // one listener per request in flight, by design
  // On a big machine, the bodies of this transfer's requests are received and written on receive
  // workers (src/http/receive-workers.ts): fetchRange drains them there.
  const totalBytes = jobs.reduce((n, j) => n + j.size, 0);
  receiveOffThread(abort.signal, totalBytes);
  const onOuterAbort = () => abort.abort(opts.signal!.reason);
  opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
  const stats: TransferStats = { fetchedBytes: 0, skippedBlobs: 0 };
  progress.addTotal(totalBytes, jobs.reduce((n, j) => n + (j.items ?? 1), 0));
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
  let unstarted = totalBytes;
  const pieceSize = () => Math.min(chunk, Math.max(MIN_RANGE, Math.ceil(unstarted / requests.size)));
  // Streams added while they raise the rate, unless the caller fixed their number (see ramp.ts).
  const ramp = opts.concurrency === undefined ? new StreamRamp(requests, () => stats.fetchedBytes, (n) => unstarted >= n * chunk, (n) => open.resize(n * 2)) : undefined;

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
        const fetches = await Promise.allSettled(
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
              }).catch((err: unknown) => {
                // The first broken stream stops the transfer (the others of this run at once, not at their pieces' end).
                fail(named(jobs[run[0]!]!, err));
                throw err;
              }),
          ),
        );
        // Halves of this run's ranges that other streams took over may still be running.
        for (let left = stolen.get(target); left?.size; left = stolen.get(target)) fetches.push(...(await Promise.allSettled(left)));
        // Only now, with every stream that writes into these ingests stopped, may their files close
        // (withIngests): a descriptor closed under a stream still writing, and reused for another
        // file, would take its bytes.
        const broke = fetches.find((r): r is PromiseRejectedResult => r.status === "rejected");
        if (broke) throw broke.reason;
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
  ramp?.stop();
  stats.streams = requests.size;
  progress.done();
  if (firstError !== undefined) throw firstError;
  return { digests: settled.map((r) => (r as PromiseFulfilledResult<string>).value), stats };
}

/** Runs taking their ingests (locks, files) at once: see `opening` in transferBlobs. */
const OPENING = 4;

/** An error that names the blob it happened to: "hf://acme/m/model.safetensors bytes 0-99: socket hang up". */
function named(job: BlobJob, err: unknown): unknown {
  if (err instanceof CakeError || (err as { name?: string })?.name === "AbortError") return err;
  const code = (err as { code?: string })?.code;
  const what = code === "ENOSPC" ? "no space left on device" : oneLine(err);
  return new CakeError(isNetworkError(err) ? "E_NETWORK" : "E_IO", `${job.label}: ${what}`, { cause: err });
}
