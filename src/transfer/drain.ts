/**
 * One answer's body drained to disk: the bytes of [pos, end) gathered a write batch at a time and
 * written in one vectored write, a stalled or trickling stream ended, the end followed as it moves
 * (a stolen half, fetch-range.ts). The same on the main thread and in a receive worker
 * (src/http/receive-workers.ts), which gets this function's source text: so it uses only what it is
 * handed and its own body.
 */
import type { byteWindow } from "../http/window.js";

/** Where a stream is: written up to `pos`, received up to `seen`; `end` may shrink while it runs. */
export interface DrainState {
  pos: number;
  seen: number;
  end: number;
}

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
  /** Bytes arrived (state.seen moved). */
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
        const keep = Math.min(data.length, st.end - at);
        if (keep > 0) {
          if (batchLen === 0) batchAt = at;
          batch.push(keep < data.length ? data.subarray(0, keep) : data);
          batchLen += keep;
          st.seen = at + keep;
          io.received?.();
        }
        if (batchLen >= limits.batch || at + keep >= st.end) await flush();
        if (at + data.length >= st.end) break;
      }
    } finally {
      await flush(); // bytes that arrived before a drop are good: keep them
    }
  };
}

export type DrainBody = ReturnType<typeof makeDrain>;
