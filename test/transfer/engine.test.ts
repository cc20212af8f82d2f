import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { Store } from "../../src/store/layout.js";
import { transferBlobs, type BlobJob } from "../../src/transfer/engine.js";

const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-engine-"));
afterAll(() => fs.rm(tmp, { recursive: true, force: true }));

const data = Buffer.alloc(6 << 20);
for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;

/** A source serving `data`, recording each request; `cut` makes a request fail after N bytes. */
function source(opts: { cut?: (call: number) => number | undefined; fatal?: boolean } = {}) {
  const calls: [number, number][] = [];
  const open = async (start: number, end: number) => {
    const call = calls.push([start, end]) - 1;
    const cutAt = opts.cut?.(call);
    const slice = data.subarray(start, cutAt !== undefined ? Math.min(end, start + cutAt) : end);
    async function* gen() {
      for (let i = 0; i < slice.length; i += 64 << 10) yield slice.subarray(i, i + (64 << 10));
      if (cutAt !== undefined) throw Object.assign(new Error(opts.fatal ? "killed" : "socket hang up"), { code: opts.fatal ? "E_KILLED" : "ECONNRESET" });
    }
    return { body: Readable.from(gen()), start };
  };
  return { calls, open };
}

const job = (store: Store, open: BlobJob["open"], expected = digest): BlobJob => ({
  key: "blob-test",
  size: data.length,
  expected,
  label: "test blob",
  existing: async () => ((await store.hasBlob(expected)) ? expected : undefined),
  open,
});

describe("transfer engine", () => {
  it("splits a big blob into parallel Range requests and verifies it", async () => {
    const store = new Store(path.join(tmp, "a"));
    const src = source();
    const { digests } = await transferBlobs(store, [job(store, src.open)], { chunkSize: 1 << 20, concurrency: 4 });
    expect(digests).toEqual([digest]);
    expect(src.calls.length).toBe(6);
    expect(Buffer.compare(await fs.readFile(store.blobPath(digest)), data)).toBe(0);
    expect((await fs.stat(store.blobPath(digest))).mode & 0o222).toBe(0); // read-only
  });

  it("leaves no small last piece: a blob a third over the chunk size is one request", async () => {
    const store = new Store(path.join(tmp, "third-over"));
    const big = Buffer.concat([data, data]); // 12 MiB
    const want = `sha256:${createHash("sha256").update(big).digest("hex")}`;
    const calls: [number, number][] = [];
    const open = async (start: number, end: number) => {
      calls.push([start, end]);
      return { body: Readable.from([big.subarray(start, end)]), start };
    };
    const one: BlobJob = { key: "third-over", size: big.length, expected: want, label: "12 MiB blob", existing: async () => undefined, open };
    const { digests } = await transferBlobs(store, [one], { chunkSize: 9 << 20, concurrency: 1 });
    expect(digests).toEqual([want]);
    expect(calls).toEqual([[0, 12 << 20]]); // not 9 MiB and then 3
  });

  it("sends the first request once the first blob's ingest is open, not after every open run's", async () => {
    const store = new Store(path.join(tmp, "open-in-order"));
    const blobs = Array.from({ length: 32 }, (_, i) => Buffer.from(`blob ${i}`));
    let partialsAtFirstRequest = -1;
    const jobs: BlobJob[] = blobs.map((b, i) => ({
      key: `open-in-order-${i}`,
      size: b.length,
      expected: `sha256:${createHash("sha256").update(b).digest("hex")}`,
      label: `blob ${i}`,
      existing: async () => undefined,
      open: async (start, end) => {
        if (partialsAtFirstRequest < 0) {
          partialsAtFirstRequest = (await store.ingestKeys()).length;
        }
        return { body: Readable.from([b.subarray(start, end)]), start };
      },
    }));
    await transferBlobs(store, jobs, { concurrency: 16 });
    // 32 runs may be open at once (concurrency × 2); a few at a time take their locks and files.
    expect(partialsAtFirstRequest).toBeGreaterThan(0);
    expect(partialsAtFirstRequest).toBeLessThanOrEqual(12);
  });

  it("asks for a stream's next piece before the last bytes of its current one arrive (no idle wait for the first byte)", async () => {
    const store = new Store(path.join(tmp, "next-early"));
    const events: string[] = [];
    let n = 0;
    const open = async (start: number, end: number) => {
      const i = n++;
      events.push(`open ${i}`);
      await new Promise((r) => setTimeout(r, 60)); // the server's wait for a first byte
      async function* body() {
        for (let at = start; at < end; at += 64 << 10) {
          await new Promise((r) => setTimeout(r, 5)); // ~13 MB/s: 3 MiB take ~240 ms
          if (at + (64 << 10) >= end) events.push(`last byte ${i}`);
          yield data.subarray(at, Math.min(end, at + (64 << 10)));
        }
      }
      return { body: Readable.from(body()), start };
    };
    const { digests } = await transferBlobs(store, [job(store, open)], { chunkSize: 3 << 20, concurrency: 1 });
    expect(digests).toEqual([digest]);
    expect(events.filter((e) => e.startsWith("open"))).toEqual(["open 0", "open 1"]);
    expect(events.slice(0, 3)).toEqual(["open 0", "open 1", "last byte 0"]);
  });

  it("takes a 200 answer to a Range request (the whole blob) and uses only the bytes it asked for", async () => {
    const store = new Store(path.join(tmp, "e"));
    const calls: number[] = [];
    const open = async (start: number) => {
      calls.push(start);
      return { body: Readable.from([data.subarray(0, 1 << 20), data.subarray(1 << 20)]), start: 0 };
    };
    const { digests } = await transferBlobs(store, [job(store, open)], { chunkSize: 2 << 20, concurrency: 3 });
    expect(digests).toEqual([digest]);
    expect(calls.sort((a, b) => a - b)).toEqual([0, 2 << 20, 4 << 20]);
  });

  it("continues a dropped stream from its last byte, within the same run", async () => {
    const store = new Store(path.join(tmp, "b"));
    const src = source({ cut: (call) => (call === 0 ? 3_300_000 : undefined) });
    await transferBlobs(store, [job(store, src.open)], { chunkSize: 8 << 20, concurrency: 1 });
    expect(src.calls).toEqual([
      [0, data.length],
      [3_300_000, data.length],
    ]);
  });

  it("after a failed run, continues a half-downloaded blob from where its bytes stop", async () => {
    const dir = path.join(tmp, "c");
    const first = source({ cut: () => 3_300_000, fatal: true });
    await expect(transferBlobs(new Store(dir), [job(new Store(dir), first.open)], { chunkSize: 8 << 20, concurrency: 1 })).rejects.toThrow("killed");
    expect(await new Store(dir).hasBlob(digest)).toBe(false);
    const store = new Store(dir);
    const second = source();
    await transferBlobs(store, [job(store, second.open)], { chunkSize: 8 << 20, concurrency: 1 });
    const [start] = second.calls[0]!;
    expect(start).toBeGreaterThan(3_300_000 - (256 << 10) - 1);
    expect(start).toBeLessThanOrEqual(3_300_000);
    expect(Buffer.compare(await fs.readFile(store.blobPath(digest)), data)).toBe(0);
  });

  it("never makes a blob visible under a digest its bytes do not hash to", async () => {
    const dir = path.join(tmp, "d");
    const store = new Store(dir);
    const wrong = `sha256:${"0".repeat(64)}`;
    await expect(transferBlobs(store, [job(store, source().open, wrong)])).rejects.toThrow(/test blob: content hashes to sha256:[0-9a-f]{64}, not sha256:0{64}/);
    expect(await fs.readdir(path.join(dir, "blobs", "sha256"))).toEqual([]);
    // and a corrupted partial file from an earlier run is caught at the end
    const first = source({ cut: () => 2_000_000, fatal: true });
    await expect(transferBlobs(store, [job(store, first.open)], { chunkSize: 8 << 20 })).rejects.toThrow("killed");
    const partial = path.join(dir, "ingest", "blob-test.partial");
    const fh = await fs.open(partial, "r+");
    await fh.write(Buffer.from("garbage"), 0, 7, 1000);
    await fh.close();
    await expect(transferBlobs(store, [job(store, source().open)], { chunkSize: 8 << 20 })).rejects.toThrow(/content hashes to/);
    expect(await fs.readdir(path.join(dir, "blobs", "sha256"))).toEqual([]);
    // the bad partial was discarded: the next run starts over and succeeds
    await transferBlobs(store, [job(store, source().open)]);
    expect(await store.hasBlob(digest)).toBe(true);
  });

  it("refuses a blob with one wrong byte, whether it came in order on one stream or in pieces on several", async () => {
    for (const [name, chunkSize, concurrency] of [["in-order", 8 << 20, 1], ["pieces", 1 << 20, 4]] as const) {
      const dir = path.join(tmp, `one-byte-${name}`);
      const store = new Store(dir);
      const bad = Buffer.from(data);
      bad[(4 << 20) + 12345]! ^= 1;
      const open = async (start: number, end: number) => ({ body: Readable.from([bad.subarray(start, end)]), start });
      await expect(transferBlobs(store, [job(store, open)], { chunkSize, concurrency })).rejects.toThrow(/test blob: content hashes to sha256:[0-9a-f]{64}, not sha256:/);
      expect(await fs.readdir(path.join(dir, "blobs", "sha256"))).toEqual([]);
      // the same bytes, right: stored
      const good = async (start: number, end: number) => ({ body: Readable.from([data.subarray(start, end)]), start });
      await transferBlobs(store, [job(store, good)], { chunkSize, concurrency });
      expect(Buffer.compare(await fs.readFile(store.blobPath(digest)), data)).toBe(0);
    }
  });

  it("when one stream breaks, ends only once every stream writing into the run's files has stopped", async () => {
    const store = new Store(path.join(tmp, "one-breaks"));
    let calls = 0;
    let reading = 0;
    const open = async (start: number, end: number) => {
      const call = ++calls;
      async function* gen() {
        reading++;
        try {
          for (let at = start; at < end; at += 64 << 10) {
            if (call === 2 && at > start) throw Object.assign(new Error("killed"), { code: "E_KILLED" });
            await new Promise((r) => setTimeout(r, 5));
            yield data.subarray(at, Math.min(end, at + (64 << 10)));
          }
        } finally {
          reading--;
        }
      }
      return { body: Readable.from(gen()), start };
    };
    await expect(transferBlobs(store, [job(store, open)], { chunkSize: 1 << 20, concurrency: 4 })).rejects.toThrow(/test blob: killed/);
    // Their files close when the transfer ends: no stream may still be writing into them then.
    expect(reading).toBe(0);
  });

  it("fetches small neighbouring blobs of one source with one Range request, and splits them back exactly", async () => {
    const store = new Store(path.join(tmp, "span"));
    const src = source();
    // data cut into 6 blobs of 1 MiB: one span source, as the units of one Hub file
    const cuts = [0, 1, 2, 3, 4, 5].map((i) => [i << 20, (i + 1) << 20] as const);
    const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
    const jobs: BlobJob[] = cuts.map(([a, b], i) => ({
      key: `span-${i}`,
      size: b - a,
      label: `part ${i}`,
      existing: async () => undefined,
      open: async (s, e) => src.open(a + s, a + e).then((r) => ({ body: r.body, start: r.start - a })),
      span: { source: "data", offset: a, open: src.open },
    }));
    const { digests } = await transferBlobs(store, jobs, { chunkSize: 4 << 20, concurrency: 1 });
    expect(digests).toEqual(cuts.map(([a, b]) => sha(data.subarray(a, b))));
    // two requests (4 MiB + 2 MiB), not six
    expect(src.calls.sort((x, y) => x[0] - y[0])).toEqual([
      [0, 4 << 20],
      [4 << 20, 6 << 20],
    ]);
  });

  it("hands out smaller pieces as the end nears, so that streams finish together", async () => {
    const store = new Store(path.join(tmp, "pieces"));
    const src = source();
    await transferBlobs(store, [job(store, src.open)], { chunkSize: 4 << 20, concurrency: 2 });
    // 6 MiB over 2 streams: a 3 MiB share each (not 4 + 2), then pieces of at least 2 MiB
    expect(src.calls.sort((x, y) => x[0] - y[0])).toEqual([
      [0, 3 << 20],
      [3 << 20, 6 << 20],
    ]);
  });

  it("at the tail, an idle stream takes over half of a slow stream's rest", async () => {
    const store = new Store(path.join(tmp, "steal"));
    const big = Buffer.alloc(16 << 20);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2246822519) >>> 0, i);
    const bigDigest = `sha256:${createHash("sha256").update(big).digest("hex")}`;
    const calls: [number, number][] = [];
    const open = async (start: number, end: number) => {
      calls.push([start, end]);
      const slice = big.subarray(start, end);
      const slow = start === 0; // the first piece trickles at ~1.3 MB/s (about 6 s for 8 MiB); the others arrive at once
      async function* gen() {
        for (let i = 0; i < slice.length; i += 64 << 10) {
          if (slow) await new Promise((r) => setTimeout(r, 50));
          yield slice.subarray(i, i + (64 << 10));
        }
      }
      return { body: Readable.from(gen()), start };
    };
    const bigJob: BlobJob = { key: "blob-steal", size: big.length, expected: bigDigest, label: "big blob", existing: async () => undefined, open };
    const { digests } = await transferBlobs(store, [bigJob], { chunkSize: 10 << 20, concurrency: 2 });
    expect(digests).toEqual([bigDigest]);
    expect(Buffer.compare(await fs.readFile(store.blobPath(bigDigest)), big)).toBe(0);
    // [0, 8 MiB) went to the slow stream; the other took the rest in shrinking pieces, then the
    // second half of what the slow one had left
    expect(calls[0]).toEqual([0, 8 << 20]);
    const stolen = calls.find(([a, b]) => a > 0 && a < 8 << 20 && b === 8 << 20);
    expect(stolen, JSON.stringify(calls)).toBeDefined();
    expect(stolen![0]).toBeGreaterThan(4 << 20);
  });
});

describe("streams that fit the link", () => {
  /** 96 blobs of 1 MiB whose source sends 64 KiB at a time: every `gapMs` per request, or through one shared budget of `totalMBps`. */
  function throttled(name: string, opts: { gapMs: number } | { totalMBps: number }) {
    const blobs = Array.from({ length: 96 }, (_, i) => data.subarray((i % 40) * (1 << 17), (i % 40) * (1 << 17) + (1 << 20)));
    let next = 0; // when the shared budget allows the next piece
    const jobs: BlobJob[] = blobs.map((b, i) => ({
      key: `${name}-${i}`,
      size: b.length,
      expected: `sha256:${createHash("sha256").update(b).digest("hex")}`,
      label: `blob ${i}`,
      existing: async () => undefined,
      open: async (start, end) => {
        async function* gen() {
          for (let at = start; at < end; at += 64 << 10) {
            let wait: number;
            if ("gapMs" in opts) wait = opts.gapMs;
            else {
              const now = performance.now();
              next = Math.max(next, now) + (64 << 10) / (opts.totalMBps * 1000);
              wait = next - now;
            }
            await new Promise((r) => setTimeout(r, wait));
            yield b.subarray(at, Math.min(end, at + (64 << 10)));
          }
        }
        return { body: Readable.from(gen()), start };
      },
    }));
    return jobs;
  }

  it("adds streams while they raise the rate (each connection capped), up to the limit", async () => {
    const store = new Store(path.join(tmp, "ramp-up"));
    // ~2 MiB/s per request: 16 streams take 3 s for 96 MiB, more streams less
    const { stats } = await transferBlobs(store, throttled("ramp-up", { gapMs: 31 }), { chunkSize: 1 << 20 });
    expect(stats.streams).toBeGreaterThanOrEqual(24);
    expect(stats.streams).toBeLessThanOrEqual(64);
  });

  it("stops adding streams once they no longer raise the rate (the link itself capped)", async () => {
    const store = new Store(path.join(tmp, "ramp-flat"));
    // 32 MB/s for the whole transfer, whatever the streams: the first step gains nothing, is taken back and ends the ramp
    const { stats } = await transferBlobs(store, throttled("ramp-flat", { totalMBps: 32 }), { chunkSize: 1 << 20 });
    expect(stats.streams).toBeLessThanOrEqual(24);
  });

  it("keeps the streams a caller fixed (--concurrency)", async () => {
    const store = new Store(path.join(tmp, "ramp-fixed"));
    const { stats } = await transferBlobs(store, throttled("ramp-fixed", { gapMs: 31 }), { chunkSize: 1 << 20, concurrency: 16 });
    expect(stats.streams).toBe(16);
  });
});
