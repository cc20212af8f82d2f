/**
 * One stream's piece of a transfer: a byte range fetched into its target (one ingest, or a run's
 * ingests side by side), continuing after dropped connections; and the tail's work sharing — a
 * slow stream's rest split in half for an idle one.
 */
import { CakeError, isCakeError, oneLine } from "../errors.js";
import { isNetworkError, retryDelay, sleep, DEFAULT_RETRY } from "../http/retry.js";
import type { Readable } from "node:stream";
import { recycle } from "../http/range-socket.js";
import { RemoteBody } from "../http/receive-workers.js";
import type { FileSpan } from "../store/vectored.js";
import { makeDrain, makeSharedRange, type DrainLimits, type SharedRange } from "./drain.js";
import { byteWindow } from "../http/window.js";
import type { Range } from "../store/ingest.js";
import type { OpenRange } from "./engine.js";
import { HTTP_TIMEOUTS, STALLED_TRIES } from "../http/timeouts.js";
import { MIN_RANGE, RANGE_ATTEMPTS, WRITE_BATCH } from "./defaults.js";
import { formatBytes } from "./progress.js";

/** Where a range's bytes go: one ingest, or the ingests of a run of neighbouring blobs. */
export interface RangeTarget {
  /** The byte ranges not on disk yet, in the target's coordinates. */
  missing(): Range[];
  /** Where its bytes go (a receive worker writes there). */
  layout(): FileSpan[];
  write(pos: number, parts: Buffer[], rangeStart: number, sinceJournal: { n: number }): Promise<void>;
  /** Bytes written by a receive worker: journaled as `write` journals its own. */
  wrote(pos: number, len: number, rangeStart: number, sinceJournal: { n: number }): Promise<void>;
  record(r: Range): Promise<void>;
}

/** A stream's piece of work: [pos, end) of a target. `end` may shrink while it runs (stealFrom). */
export class Fetch {
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
  /** While a receive worker drains this stream: its end and how far it took bytes, shared with it (drain.ts). */
  shared?: SharedRange;
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

  /** Takes bytes [at, at + len) of a chunk received here, up to the end (drain.ts). */
  claim(at: number, len: number): number {
    const keep = Math.max(0, Math.min(len, this.end - at));
    if (keep > 0) this.seen = at + keep;
    return keep;
  }

  reached(pos: number): boolean {
    return pos >= this.end;
  }

  /** Received up to here: as the receive worker draining it says, else as seen here. */
  get taken(): number {
    return this.shared ? this.shared.taken : this.seen;
  }
}

/** A stream's rate means something after this long (ms): its first bytes may come with the headers. */
const RATE_AFTER_MS = 20;

/**
 * How long a request of this transfer waits for its first byte (a moving average, ms): what a
 * stream would idle between two pieces if it asked for the next only after the last byte.
 */
export class FirstByteWait {
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
export const STEAL_POLL_MS = 100;

/** Some running fetch has enough left that it may be worth splitting once its rate shows. */
export const mayStealLater = (active: Set<Fetch>) => [...active].some((f) => f.ranged && f.end - f.taken >= 2 * MIN_STEAL);

/** How long `f` needs for the rest at its rate so far (ms); 0 when it has no rate yet. */
function timeLeft(f: Fetch, now: number): number {
  const seen = f.taken;
  const got = seen - f.startedPos;
  const took = now - f.startedAt;
  return got > 0 && took > 0 ? ((f.end - seen) * took) / got : 0;
}

/**
 * Splits the running fetch that needs the longest for its rest: it stops halfway, the second half is
 * returned for an idle stream. Near the end of a transfer over slow connections this keeps every
 * stream busy instead of waiting on the one that drew the biggest range.
 */
export function stealFrom(active: Set<Fetch>): Fetch | undefined {
  const now = performance.now();
  let victim: Fetch | undefined;
  for (const f of active) if (f.ranged && (!victim || timeLeft(f, now) > timeLeft(victim, now))) victim = f;
  if (!victim) return undefined;
  const seen = victim.taken;
  if (victim.end - seen < 2 * MIN_STEAL || now - victim.startedAt < STEAL_AFTER_MS || timeLeft(victim, now) < STEAL_AFTER_MS) return undefined;
  const mid = seen + Math.floor((victim.end - seen) / 2);
  // A receive worker may have taken more meanwhile: the end moves only if it has not taken bytes past it.
  if (victim.shared && !victim.shared.moveEnd(mid)) return undefined;
  const stolen = new Fetch(victim.label, victim.target, [mid, victim.end], victim.open);
  victim.end = mid;
  return stolen;
}

/** Below this many bytes in SLOW_WINDOW_MS, a stream is stalled (a trickle; 16 KiB: no real link is that slow). */
const SLOW_STREAM_BYTES = 16 << 10;
/** The window: the idle timeout's (CAKE_HTTP_IDLE_TIMEOUT); 0 turns the check off with it. */
const SLOW_WINDOW_MS = HTTP_TIMEOUTS.idleMs;
const SLOW_CODE = "CAKE_SLOW_STREAM";
/** How a stream's body is drained (drain.ts), here and in receive workers. */
const DRAIN_LIMITS: DrainLimits = {
  batch: WRITE_BATCH,
  slowWindowMs: SLOW_WINDOW_MS,
  slowBytes: SLOW_STREAM_BYTES,
  slowMessage: `less than ${formatBytes(SLOW_STREAM_BYTES)} in ${SLOW_WINDOW_MS / 1000} s (CAKE_HTTP_IDLE_TIMEOUT)`,
  slowCode: SLOW_CODE,
};
const drainBody = makeDrain(byteWindow);
const sharedRange = makeSharedRange();

/** Fetches [pos, end) of `f` into its target, continuing after dropped connections. */
export async function fetchRange(f: Fetch, active: Set<Fetch>, signal: AbortSignal, onBytes: (n: number) => void, firstByte: FirstByteWait): Promise<void> {
  active.add(f);
  const from = f.pos;
  let sent = 0;
  /** Tries ended as too slow: progress does not renew these (a trickle always progresses). */
  let slowTries = 0;
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
        const nearly = () => {
          const now = performance.now();
          if (now - f.startedAt >= RATE_AFTER_MS && timeLeft(f, now) <= firstByte.ms) f.signalNearlyDone();
        };
        if (body instanceof RemoteBody) {
          // A receive worker writes the bytes where they belong; here only the bookkeeping, as it says how far it got.
          let told: Promise<void> = Promise.resolve();
          const advance = async (pos: number) => {
            const upTo = Math.min(pos, f.end);
            if (upTo <= f.pos) return;
            const at = f.pos;
            f.pos = f.seen = upTo;
            onBytes(upTo - at);
            nearly();
            await f.target.wrote(at, upTo - at, rangeStart, since);
          };
          f.shared = sharedRange.create(f.pos, f.end);
          let failure: unknown;
          try {
            await body.drainInto(bodyStart, f.shared, f.target.layout(), DRAIN_LIMITS, (pos) => {
              told = told.then(() => advance(pos));
              told.catch(() => {}); // a journal write that fails (a full disk) is thrown below, once the worker is done
            });
          } catch (err) {
            failure = err;
          } finally {
            f.shared = undefined;
            await told;
          }
          // Cut after its (possibly moved) end: what was this stream's arrived.
          if (failure !== undefined && f.pos < f.end) throw failure;
        } else {
          // Network chunks are ~64 KiB; the disk takes them WRITE_BATCH at a time, in one vectored write (no copy).
          await drainBody(body as Readable, bodyStart, f, DRAIN_LIMITS, {
            write: (at, parts) => f.target.write(at, parts, rangeStart, since),
            written: (_pos, len) => onBytes(len),
            received: nearly,
            recycle,
          });
        }
        if (f.pos < f.end) throw new CakeError("E_SIZE", `${f.label}: stream ended at byte ${f.pos}, expected ${f.end}`);
        await f.target.record([rangeStart, f.end]);
        return;
      } catch (err) {
        await f.target.record([rangeStart, f.pos]).catch(() => {});
        const slow = (err as { code?: string }).code === SLOW_CODE;
        if (slow) slowTries++;
        const retryable = slow || isNetworkError(err) || isCakeError(err, "E_SIZE") || (err as { retryable?: boolean }).retryable === true;
        if (signal.aborted || !retryable || attempt >= RANGE_ATTEMPTS || slowTries >= STALLED_TRIES) {
          if (signal.aborted && signal.reason !== err) throw signal.reason ?? err;
          if (isCakeError(err) || !retryable) throw err;
          // The stream kept breaking: one line that says how far it got, as src/http says it for its requests.
          const what = slow ? oneLine(err) : isNetworkError(err) ? "connection closed" : oneLine(err);
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
