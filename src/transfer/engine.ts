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
import type { Ingest, Range } from "../store/ingest.js";
import { DEFAULT_CHUNK, DEFAULT_CONCURRENCY, RANGE_ATTEMPTS, WRITE_BATCH } from "./defaults.js";
import { Pool } from "./pool.js";
import { silentProgress, type ProgressSink } from "./progress.js";

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
  /** The digest, when the store already has this blob (checked again under the ingest lock). */
  existing(): Promise<string | undefined>;
  /**
   * A stream of the blob's bytes from `start` to `end` (exclusive). The source may start earlier
   * (a 200 answer to a Range request): it says where its body starts.
   */
  open(start: number, end: number, signal: AbortSignal): Promise<{ body: Readable; start: number }>;
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

/** Fetches every job's blob into the store; returns the digests, aligned with `jobs`. */
export async function transferBlobs(store: Store, jobs: readonly BlobJob[], opts: TransferOptions = {}): Promise<{ digests: string[]; stats: TransferStats }> {
  const concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY;
  const chunk = opts.chunkSize ?? DEFAULT_CHUNK;
  const progress = opts.progress ?? silentProgress;
  const requests = new Pool(concurrency);
  // Blobs open at once: enough to keep the request pool full while others hash and commit.
  const open = new Pool(concurrency * 2);
  const abort = new AbortController();
  setMaxListeners(0, abort.signal); // one listener per request in flight, by design
  const onOuterAbort = () => abort.abort(opts.signal!.reason);
  opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
  const stats: TransferStats = { fetchedBytes: 0, skippedBlobs: 0 };
  progress.addTotal(jobs.reduce((n, j) => n + j.size, 0), jobs.reduce((n, j) => n + (j.items ?? 1), 0));

  let firstError: unknown;
  const fail = (err: unknown) => {
    firstError ??= err;
    if (!abort.signal.aborted) abort.abort(err);
  };

  const runJob = async (job: BlobJob): Promise<string> => {
    const known = await job.existing();
    if (known) {
      stats.skippedBlobs++;
      progress.bytes(job.size);
      progress.item(job.items ?? 1);
      return known;
    }
    return open.run(() =>
      store.withIngest(job.key, job.size, async (ing) => {
        // Another process may have finished it while we waited for the lock.
        const again = await job.existing();
        if (again) {
          await ing.discard();
          stats.skippedBlobs++;
          progress.bytes(job.size);
          return again;
        }
        progress.bytes(ing.have);
        await Promise.all(
          ing.missing(chunk).map((r) =>
            requests.run(async () => {
              if (abort.signal.aborted) throw abort.signal.reason;
              await fetchRange(job, ing, r, abort.signal, (n) => {
                stats.fetchedBytes += n;
                progress.bytes(n);
              });
            }),
          ),
        );
        const digest = await store.commit(ing, job.expected, job.label);
        await job.done?.(digest);
        return digest;
      }),
    ).then((d) => {
      progress.item(job.items ?? 1);
      return d;
    });
  };

  const results = await Promise.allSettled(
    jobs.map((j, i) =>
      runJob(j).catch((err) => {
        throw named(j, err);
      }).then(
        (d) => {
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
  return { digests: results.map((r) => (r as PromiseFulfilledResult<string>).value), stats };
}

/** An error that names the blob it happened to: "hf://acme/m/model.safetensors bytes 0-99: socket hang up". */
function named(job: BlobJob, err: unknown): unknown {
  if (err instanceof CakeError || (err as { name?: string })?.name === "AbortError") return err;
  const code = (err as { code?: string })?.code;
  const what = code === "ENOSPC" ? "no space left on device" : oneLine(err);
  return new CakeError(isNetworkError(err) ? "E_NETWORK" : "E_IO", `${job.label}: ${what}`, { cause: err });
}

/** Fetches [start, end) of a job into its ingest, continuing after dropped connections. */
async function fetchRange(job: BlobJob, ing: Ingest, [start, end]: Range, signal: AbortSignal, onBytes: (n: number) => void): Promise<void> {
  let pos = start;
  for (let attempt = 1; ; attempt++) {
    const since = { n: 0 };
    const rangeStart = pos;
    try {
      const { body, start: bodyStart } = await job.open(pos, end, signal);
      // Network chunks are ~64 KiB; the disk takes them WRITE_BATCH at a time, in one vectored write (no copy).
      let batch: Buffer[] = [];
      let batchAt = pos;
      let batchLen = 0;
      const flush = async () => {
        if (batchLen === 0) return;
        await ing.write(batchAt, batch, rangeStart, since);
        pos = batchAt + batchLen;
        onBytes(batchLen);
        batch = [];
        batchLen = 0;
      };
      try {
        for await (const { at, data } of byteWindow(body, bodyStart, pos, end)) {
          if (batchLen === 0) batchAt = at;
          batch.push(data);
          batchLen += data.length;
          if (batchLen >= WRITE_BATCH) await flush();
        }
      } finally {
        await flush(); // bytes that arrived before a drop are good: keep them
      }
      if (pos < end) throw new CakeError("E_SIZE", `${job.label}: stream ended at byte ${pos}, expected ${end}`);
      await ing.record([rangeStart, end]);
      return;
    } catch (err) {
      await ing.record([rangeStart, pos]).catch(() => {});
      const retryable = isNetworkError(err) || isCakeError(err, "E_SIZE") || (err as { retryable?: boolean }).retryable === true;
      if (signal.aborted || !retryable || attempt >= RANGE_ATTEMPTS) {
        if (signal.aborted && signal.reason !== err) throw signal.reason ?? err;
        throw err;
      }
      await sleep(retryDelay(attempt, DEFAULT_RETRY, (err as { retryAfter?: string }).retryAfter), signal);
      // A stream that made progress before it dropped earns a fresh budget of attempts.
      if (pos > rangeStart) attempt = 0;
    }
  }
}
