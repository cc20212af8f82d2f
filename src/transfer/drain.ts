/**
 * One answer's body drained to disk: the bytes of [pos, end) gathered a write batch at a time and
 * written in one vectored write, a stalled or trickling stream ended, the end followed as it moves
 * (a stolen half, fetch-range.ts). The same on the main thread and in a receive worker
 * (src/http/receive-workers.ts), which gets these functions' source text: so they use only what
 * they are handed and their own bodies.
 */
import type { byteWindow } from "../http/window.js";

/**
 * Where a stream is: written up to `pos`. Its end may move closer while it runs (a stolen half):
 * `claim` takes a received chunk's bytes up to the end as it is now (and no byte past it is taken
 * after a move), `reached` says whether the end is reached.
 */
export interface DrainState {
  pos: number;
  readonly end: number;
  /** Takes bytes [at, at + len) up to the end; how many. */
  claim(at: number, len: number): number;
  reached(pos: number): boolean;
}

/**
 * A stream's end and how far its bytes are taken, in a SharedArrayBuffer between the main thread
 * and the receive worker draining the stream: the worker claims each chunk up to the end, the main
 * thread moves the end only to a byte not taken yet, both under one lock (held for a few
 * instructions). So a stolen half is never also written by the stream it was taken from.
 */
export function makeSharedRange() {
  function open(sab: SharedArrayBuffer) {
    const lock = new Int32Array(sab, 0, 1);
    // [start, end, taken]: positions as doubles (exact to 2^53), read and written under the lock.
    const at = new Float64Array(sab, 8, 3);
    const locked = <T>(fn: () => T): T => {
      while (Atomics.compareExchange(lock, 0, 0, 1) !== 0);
      try {
        return fn();
      } finally {
        Atomics.store(lock, 0, 0);
      }
    };
    return {
      sab,
      start: at[0]!,
      get end() {
        return locked(() => at[1]!);
      },
      /** How far bytes are taken. */
      get taken() {
        return locked(() => at[2]!);
      },
      claim(from: number, len: number): number {
        return locked(() => {
          const keep = Math.max(0, Math.min(len, at[1]! - from));
          if (keep > 0) at[2] = Math.max(at[2]!, from + keep);
          return keep;
        });
      },
      reached: (pos: number) => locked(() => pos >= at[1]!),
      /** Moves the end closer, to `end`, unless bytes past it are taken already: whether it moved. */
      moveEnd: (end: number) => locked(() => (end >= at[2]! && end <= at[1]! ? ((at[1] = end), true) : false)),
    };
  }
  return {
    open,
    create(start: number, end: number) {
      const sab = new SharedArrayBuffer(32);
      new Float64Array(sab, 8, 3).set([start, end, start]);
      return open(sab);
    },
  };
}

export type SharedRange = ReturnType<ReturnType<typeof makeSharedRange>["open"]>;

export interface DrainLimits {
  /** Bytes gathered before a write (WRITE_BATCH). */
  batch: number;
  /** Fewer than `slowBytes` in `slowWindowMs` (0: never) ends the try with `slowMessage`, code `slowCode`. */
  slowWindowMs: number;
  slowBytes: number;
  slowMessage: string;
  slowCode: string;
}

export interface DrainIo {
  /** Writes consecutive pieces at `at` (synchronously, or before the promise settles). */
  write(at: number, parts: Buffer[]): unknown;
  /** After each write: [pos - len, pos) is on disk. */
  written(pos: number, len: number): unknown;
  /** Bytes arrived (claimed). */
  received?(): void;
  /** The written pieces' memory may take the next bytes off the network (http/range-socket.ts). */
  recycle(parts: readonly Uint8Array[]): void;
}

export function makeDrain(window: typeof byteWindow) {
  return async function drainBody(body: AsyncIterable<Uint8Array> & { destroy(): unknown }, bodyStart: number, st: DrainState, limits: DrainLimits, io: DrainIo): Promise<void> {
    let batch: Buffer[] = [];
    let batchAt = st.pos;
    let batchLen = 0;
    const flush = async () => {
      if (batchLen === 0) return;
      await io.write(batchAt, batch);
      io.recycle(batch);
      st.pos = batchAt + batchLen;
      const len = batchLen;
      batch = [];
      batchLen = 0;
      await io.written(st.pos, len);
    };
    // A stream that delivers less than slowBytes in slowWindowMs is stalled even though bytes trickle
    // in (a byte every 25 s never trips the idle timeout): the try ends.
    let windowAt = performance.now();
    let windowBytes = 0;
    try {
      for await (const { at, data } of window(body, bodyStart, st.pos, st.end)) {
        windowBytes += data.length;
        const t = performance.now();
        if (limits.slowWindowMs > 0 && t - windowAt >= limits.slowWindowMs) {
          if (windowBytes < limits.slowBytes) throw Object.assign(new Error(limits.slowMessage), { code: limits.slowCode });
          windowAt = t;
          windowBytes = 0;
        }
        // The end may have moved closer (a stolen half): keep only what is still ours, and stop there.
        const keep = st.claim(at, data.length);
        if (keep > 0) {
          if (batchLen === 0) batchAt = at;
          batch.push(keep < data.length ? data.subarray(0, keep) : data);
          batchLen += keep;
          io.received?.();
        }
        const done = st.reached(at + keep);
        if (batchLen >= limits.batch || done) await flush();
        if (done) break;
      }
    } finally {
      await flush(); // bytes that arrived before a drop are good: keep them
    }
  };
}

export type DrainBody = ReturnType<typeof makeDrain>;
