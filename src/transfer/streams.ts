/**
 * How many streams a transfer runs when none was asked for (`-c`): it starts with a few per core and
 * doubles them while that brings more bytes a second. Measured on 2 cores, 512 MB: from a link of
 * 40 MB/s per connection 8 streams took 2.05 s and 16 1.28 s; from loopback, where the CPU is the
 * limit, more streams bring nothing (8 and 16 within the machine's noise). On 16 cores, uncapped,
 * 32 streams were slower than 16, capped 64 faster (docs/benchmarks.md, issue 21). So: more streams
 * when they help, and only then.
 *
 * Every TICK_MS it looks at what arrived. With pieces waiting for a stream, the count doubles (up to
 * MAX_STREAMS); when a doubling did not bring at least 10 % more bytes a second in the next tick,
 * it goes back and stays there.
 */
import os from "node:os";

export const TICK_MS = 250;
/** The most streams a transfer grows to (a CDN's per-connection rate times this is past any link here). */
export const MAX_STREAMS = 64;
/** Streams to start with: 4 a core, at least 8, at most 16. */
export const startStreams = (cores = os.availableParallelism()) => Math.min(16, Math.max(8, 4 * cores));

export interface StreamSample {
  /** Milliseconds since some fixed point. */
  at: number;
  /** Bytes arrived so far. */
  bytes: number;
  /** Pieces are waiting for a stream. */
  demand: boolean;
}

/** What a doubling must add to the rate to be kept (the rate of a loaded machine moves by a few %). */
const GAIN = 1.1;

export class StreamCount {
  private last: StreamSample | undefined;
  private lastRate = 0;
  /** The count before the last doubling, while its effect is being judged. */
  private before: number | undefined;
  private settled = false;

  constructor(
    public count: number,
    private readonly max = MAX_STREAMS,
  ) {}

  /** Takes a sample; returns the new count when it changes. */
  observe(s: StreamSample): number | undefined {
    const last = this.last;
    this.last = s;
    if (!last || s.at <= last.at) return undefined;
    const ms = s.at - last.at;
    const rate = (s.bytes - last.bytes) / ms;
    const lastRate = this.lastRate;
    this.lastRate = rate;
    if (this.before !== undefined) {
      const before = this.before;
      this.before = undefined;
      if (rate < lastRate * GAIN) {
        this.settled = true;
        this.count = before;
        return before;
      }
    }
    if (this.settled || !s.demand || this.count >= this.max) return undefined;
    this.before = this.count;
    this.count = Math.min(this.max, this.count * 2);
    return this.count;
  }
}
