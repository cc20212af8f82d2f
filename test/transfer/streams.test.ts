/**
 * A transfer's stream count when none is asked for: a few per core, doubled while the link (not the
 * CPU) limits and pieces wait for a stream, taken back when a doubling brought nothing; and the
 * request pool grows and shrinks with it.
 */
import { describe, expect, it } from "vitest";
import { Pool } from "../../src/transfer/pool.js";
import { MAX_STREAMS, startStreams, StreamCount } from "../../src/transfer/streams.js";

/** Samples every 500 ms: `mbps` MB/s arriving, pieces waiting unless said. */
function feed(c: StreamCount, steps: { mbps: number; demand?: boolean }[]): (number | undefined)[] {
  let at = 0;
  let bytes = 0;
  c.observe({ at, bytes, demand: true });
  return steps.map((s) => {
    at += 500;
    bytes += s.mbps * 500e3;
    return c.observe({ at, bytes, demand: s.demand ?? true });
  });
}

describe("stream count", () => {
  it("starts with 4 a core, at least 8 and at most 16", () => {
    expect([1, 2, 3, 4, 16, 64].map((n) => startStreams(n))).toEqual([8, 8, 12, 16, 16, 16]);
  });

  it("doubles while each doubling brings more bytes (a capped link), up to 64", () => {
    const c = new StreamCount(8);
    // 40 MB/s per stream: every doubling doubles the rate.
    const changes = feed(c, [320, 640, 1280, 2560, 2560].map((mbps) => ({ mbps })));
    expect(changes.filter((x) => x !== undefined)).toEqual([16, 32, 64]);
    expect(c.count).toBe(MAX_STREAMS);
  });

  it("goes back when a doubling brought less than 10 % more (the CPU is the limit), and stays there", () => {
    const c = new StreamCount(8);
    const changes = feed(c, [{ mbps: 400 }, { mbps: 420 }, { mbps: 400 }, { mbps: 400 }]);
    expect(changes).toEqual([16, 8, undefined, undefined]);
    expect(c.count).toBe(8);
  });

  it("keeps a doubling that paid and goes back from the next that did not", () => {
    const c = new StreamCount(16);
    expect(feed(c, [{ mbps: 500 }, { mbps: 700 }, { mbps: 690 }, { mbps: 700 }])).toEqual([32, 64, 32, undefined]);
    expect(c.count).toBe(32);
  });

  it("does not grow when no piece waits for a stream", () => {
    const c = new StreamCount(8);
    expect(feed(c, [{ mbps: 100, demand: false }])).toEqual([undefined]);
  });
});

describe("a pool resized while it runs", () => {
  it("starts waiting tasks when it grows, lets running ones finish when it shrinks, never runs more than its size", async () => {
    const pool = new Pool(2);
    let running = 0;
    let most = 0;
    const gates: (() => void)[] = [];
    const task = () =>
      pool.run(async () => {
        running++;
        most = Math.max(most, running);
        await new Promise<void>((r) => gates.push(r));
        running--;
      });
    const all = Array.from({ length: 10 }, task);
    await new Promise((r) => setImmediate(r));
    expect(running).toBe(2);
    pool.resize(5);
    await new Promise((r) => setImmediate(r));
    expect(running).toBe(5);
    pool.resize(1);
    for (let i = 0; i < 4; i++) gates.shift()!();
    await new Promise((r) => setImmediate(r));
    expect(running).toBe(1);
    expect(most).toBe(5);
    while (running > 0 || pool.waiting > 0) {
      gates.shift()?.();
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all(all);
    expect(most).toBe(5);
  });
});
