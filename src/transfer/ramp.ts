/**
 * More streams while they help (a pull without --concurrency). A CDN or registry serves each
 * connection at a fraction of the link: on a 16-core machine behind a link capped at 40 MB/s per
 * connection, 64 streams took 743 MB/s where 16 took 518 (issue "Throughput"). On a small machine
 * the CPU is the limit and more streams only cost memory. So a transfer starts with the default
 * streams and, while enough is left for more streams to take a piece each, adds RAMP_STEP at a time
 * as long as each step raised the rate by RAMP_GAIN; the first step that does not is taken back and
 * ends the ramp. A server (`cake proxy`) runs many transfers at once: it fixes their streams.
 */
import type { Pool } from "./pool.js";

/** The most streams a ramp reaches (the shared HTTP agent keeps 64 connections per origin). */
const RAMP_MAX = 64;
/** Streams added at a step. */
const RAMP_STEP = 8;
/** How long each rate is measured over (ms). */
const RAMP_WINDOW_MS = 250;
/** Windows that only start the clock: connects, first-byte waits, TCP's slow start. */
const WARM_WINDOWS = 2;
/** A step that raised the rate by less than this factor ends the ramp. */
const RAMP_GAIN = 1.1;

export class StreamRamp {
  private lastBytes = 0;
  private lastAt: number;
  /** The rate measured before the last step (bytes/ms), until the window after it is compared; else 0. */
  private before = 0;
  private windows = 0;
  private settled = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pool: Pool,
    private readonly bytes: () => number,
    /** Whether what no request has taken yet would keep this many streams busy. */
    private readonly workFor: (streams: number) => boolean,
    /** Told the new number of streams after each step (pools sized by it follow). */
    private readonly onStep: (streams: number) => void,
  ) {
    this.lastAt = performance.now();
    this.timer = setInterval(() => this.tick(), RAMP_WINDOW_MS);
    this.timer.unref();
  }

  /** One window's rate against the one before the last step: step up, or step back and settle. */
  tick(): void {
    const now = performance.now();
    const got = this.bytes();
    const rate = (got - this.lastBytes) / Math.max(1, now - this.lastAt);
    this.lastBytes = got;
    this.lastAt = now;
    if (this.settled || this.windows++ < WARM_WINDOWS) return;
    if (this.before > 0) {
      if (rate < this.before * RAMP_GAIN) {
        // That step bought nothing (the CPU, the disk or the link itself is the limit): back to the streams before it.
        this.set(Math.max(1, this.pool.size - RAMP_STEP));
        return this.stop();
      }
      this.before = 0;
    }
    // At the most streams, or not enough left for more streams to take a piece each (the tail, a small plan).
    if (this.pool.size >= RAMP_MAX || !this.workFor(this.pool.size + RAMP_STEP)) return this.stop();
    this.before = rate;
    this.set(Math.min(RAMP_MAX, this.pool.size + RAMP_STEP));
  }

  private set(streams: number): void {
    this.pool.resize(streams);
    this.onStep(streams);
  }

  stop(): void {
    this.settled = true;
    clearInterval(this.timer);
  }
}
