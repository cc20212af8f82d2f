/**
 * Receive workers (src/http/receive-workers.ts): with them on, a transfer's bodies are received
 * and written on worker threads, and what the user gets is the same as without: the blobs whole
 * and checked, a cut answer continued from its last byte, a wrong byte refused, a slow stream's
 * rest split for an idle one, an error answer's own words in the message, an abort that stops
 * every stream before its files close.
 */
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { CakeError } from "../../src/errors.js";
import { receiveCounters } from "../../src/http/receive-workers.js";
import { httpRequest, readUpTo } from "../../src/http/request.js";
import { Store } from "../../src/store/layout.js";
import { transferBlobs, type BlobJob } from "../../src/transfer/engine.js";

process.env.CAKE_RECEIVE_WORKERS = "2";

const DATA = randomBytes(12 << 20);
const BIG = 130 << 20;
/** Bytes [start, end) of DATA repeated. */
function repeated(start: number, end: number): Buffer {
  const parts: Buffer[] = [];
  for (let at = start; at < end; ) {
    const from = at % DATA.length;
    const n = Math.min(end - at, DATA.length - from);
    parts.push(DATA.subarray(from, from + n));
    at += n;
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}
const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

interface Knobs {
  /** Bytes per second for answers whose range starts at byte 0 of a blob (the others are not throttled). */
  slowFirst?: number;
  /** Every nth answer is cut half-way through its body. */
  cutEvery?: number;
  /** Flip this byte of the data as served. */
  flip?: number;
  /** Answer 403 with this JSON reason. */
  refuse?: string;
}
let knobs: Knobs = {};
let served: { blob: number; start: number; end: number }[] = [];
let server: http.Server;
let base: string;
let tmp: string;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-recv-"));
  // /blob/<i>: bytes [i * 4 MiB, (i + 1) * 4 MiB) of DATA, by Range.
  server = http.createServer((req, res) => {
    // /blob/all: the whole of DATA, one blob.
    // /blob/big: BIG bytes, DATA over and over.
    const big = req.url === "/blob/big";
    const blob = req.url === "/blob/all" || big ? 0 : Number(/^\/blob\/(\d+)$/.exec(req.url ?? "")?.[1]);
    const size = big ? BIG : req.url === "/blob/all" ? DATA.length : 4 << 20;
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
    if (knobs.refuse) {
      const body = JSON.stringify({ error: knobs.refuse });
      res.writeHead(403, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      return void res.end(body);
    }
    if (!m || !Number.isInteger(blob)) return void res.writeHead(400).end();
    const [start, end] = [Number(m[1]), Number(m[2]) + 1];
    served.push({ blob, start, end });
    let bytes = big ? repeated(start, end) : DATA.subarray((blob << 22) + start, (blob << 22) + end);
    if (knobs.flip !== undefined && knobs.flip >= (blob << 22) + start && knobs.flip < (blob << 22) + end) {
      bytes = Buffer.from(bytes);
      bytes[knobs.flip - (blob << 22) - start]! ^= 1;
    }
    res.writeHead(206, { "content-range": `bytes ${start}-${end - 1}/${size}`, "content-length": bytes.length });
    const cut = knobs.cutEvery && served.length % knobs.cutEvery === 0 ? bytes.length >> 1 : undefined;
    const rate = start === 0 ? knobs.slowFirst : undefined;
    // 64 KiB at a time: throttled, or cut.
    const piece = 64 << 10;
    let at = 0;
    const next = () => {
      if (res.destroyed) return;
      if (cut !== undefined && at >= cut) return void res.socket?.destroy();
      if (at >= bytes.length) return void res.end();
      const n = Math.min(piece, bytes.length - at);
      const ok = res.write(bytes.subarray(at, at + n));
      at += n;
      if (rate) setTimeout(next, (n / rate) * 1000);
      else if (ok) next();
      else res.once("drain", next);
    };
    next();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await fs.rm(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  knobs = {};
  served = [];
});

/** The three 4 MiB blobs of DATA, each read by Range from the server as the registry and Hub clients read theirs. */
function jobs(store: Store): BlobJob[] {
  return [0, 1, 2].map((i) => {
    const expected = sha(DATA.subarray(i << 22, (i + 1) << 22));
    return {
      key: expected.slice(7),
      size: 4 << 20,
      expected,
      label: `blob ${i}`,
      existing: async () => ((await store.hasBlob(expected)) ? expected : undefined),
      open: async (start, end, signal) => {
        const res = await httpRequest(`${base}/blob/${i}`, { headers: { range: `bytes=${start}-${end - 1}` }, signal, retry: { retries: 2 } });
        if (res.status !== 206) throw new CakeError("E_HTTP", `blob ${i}: HTTP ${res.status}: ${(await readUpTo(res.body, 4096)).toString()}`);
        return { body: res.body, start };
      },
    };
  });
}

let n = 0;
const freshStore = () => new Store(path.join(tmp, `store-${n++}`));

describe("receive workers", () => {
  it("receive and write every blob's bytes off the main thread; the blobs are whole and checked", async () => {
    const store = freshStore();
    const before = { ...receiveCounters };
    const { digests } = await transferBlobs(store, jobs(store), { chunkSize: 1 << 20, concurrency: 4 });
    expect(digests).toEqual([0, 1, 2].map((i) => sha(DATA.subarray(i << 22, (i + 1) << 22))));
    for (const [i, d] of digests.entries()) expect(Buffer.compare(await fs.readFile(store.blobPath(d)), DATA.subarray(i << 22, (i + 1) << 22))).toBe(0);
    // Every body byte was written by a worker, every answer came from one.
    expect(receiveCounters.drainedBytes - before.drainedBytes).toBe(12 << 20);
    expect(receiveCounters.answers - before.answers).toBe(served.length);
  });

  it("continue an answer cut half-way from its last byte", async () => {
    knobs.cutEvery = 3;
    const store = freshStore();
    const { digests } = await transferBlobs(store, jobs(store), { chunkSize: 1 << 20, concurrency: 4 });
    for (const [i, d] of digests.entries()) expect(Buffer.compare(await fs.readFile(store.blobPath(d)), DATA.subarray(i << 22, (i + 1) << 22))).toBe(0);
    // Continuations start where a cut stopped, not at a piece's start.
    expect(served.some((s) => s.start % (1 << 20) !== 0)).toBe(true);
  });

  it("refuse a blob with one wrong byte: nothing is visible under its digest", async () => {
    knobs.flip = (1 << 22) + 777_777;
    const store = freshStore();
    await expect(transferBlobs(store, jobs(store), { chunkSize: 1 << 20, concurrency: 4 })).rejects.toThrow(/blob 1: content hashes to sha256:[0-9a-f]{64}, not sha256:/);
    expect(await store.hasBlob(sha(DATA.subarray(1 << 22, 2 << 22)))).toBe(false);
  });

  it("split a slow stream's rest for an idle one, and stop the slow one where the split is", async () => {
    // The first piece trickles at 2 MB/s; the rest comes at once.
    knobs.slowFirst = 2e6;
    const store = freshStore();
    const whole: BlobJob = {
      key: "whole",
      size: DATA.length,
      expected: sha(DATA),
      label: "whole",
      existing: async () => undefined,
      open: async (start, end, signal) => ({ body: (await httpRequest(`${base}/blob/all`, { headers: { range: `bytes=${start}-${end - 1}` }, signal })).body, start }),
    };
    const before = receiveCounters.drainedBytes;
    const { digests } = await transferBlobs(store, [whole], { chunkSize: 12 << 20, concurrency: 2 });
    expect(Buffer.compare(await fs.readFile(store.blobPath(digests[0]!)), DATA)).toBe(0);
    // Two pieces of 6 MiB, then a request for the second half of what the slow one had left.
    expect(served.some((s) => s.start > 0 && s.start < 6 << 20)).toBe(true);
    // The slow stream's worker stopped exactly at the split: no byte was written by both streams.
    expect(receiveCounters.drainedBytes - before).toBe(DATA.length);
  });

  it("read an error answer's body across threads: its own words are in the message", async () => {
    knobs.refuse = "gated repo: ask for access on its page";
    const store = freshStore();
    const before = receiveCounters.answers;
    await expect(transferBlobs(store, jobs(store), { chunkSize: 1 << 20, concurrency: 4 })).rejects.toThrow(/HTTP 403: \{"error":"gated repo: ask for access on its page"\}/);
    expect(receiveCounters.answers).toBeGreaterThan(before);
  });

  it("by default (16 cores here, say), leave a small transfer on the main thread: a worker would take longer to start", async () => {
    const cores = vi.spyOn(os, "availableParallelism").mockReturnValue(16);
    delete process.env.CAKE_RECEIVE_WORKERS;
    try {
      const store = freshStore();
      const before = receiveCounters.answers;
      await transferBlobs(store, jobs(store), { chunkSize: 1 << 20, concurrency: 4 });
      expect(receiveCounters.answers).toBe(before);
      expect(served.length).toBeGreaterThan(0);
    } finally {
      process.env.CAKE_RECEIVE_WORKERS = "2";
      cores.mockRestore();
    }
  });

  it("by default, take a big transfer's requests to the workers once they have started", async () => {
    const cores = vi.spyOn(os, "availableParallelism").mockReturnValue(16);
    delete process.env.CAKE_RECEIVE_WORKERS;
    try {
      const store = freshStore();
      const hash = createHash("sha256");
      for (let at = 0; at < BIG; at += 8 << 20) hash.update(repeated(at, Math.min(BIG, at + (8 << 20))));
      const expected = `sha256:${hash.digest("hex")}`;
      const job: BlobJob = {
        key: "big",
        size: BIG,
        expected,
        label: "big",
        existing: async () => undefined,
        open: async (start, end, signal) => ({ body: (await httpRequest(`${base}/blob/big`, { headers: { range: `bytes=${start}-${end - 1}` }, signal })).body, start }),
      };
      const before = { ...receiveCounters };
      const { digests } = await transferBlobs(store, [job], { concurrency: 8 });
      expect(digests).toEqual([expected]);
      expect(receiveCounters.answers).toBeGreaterThan(before.answers);
      expect(receiveCounters.drainedBytes).toBeGreaterThan(before.drainedBytes);
    } finally {
      process.env.CAKE_RECEIVE_WORKERS = "2";
      cores.mockRestore();
    }
  });

  it("stop every stream on abort, before the files they write are closed; a rerun finishes", async () => {
    knobs.slowFirst = 1e6;
    const store = freshStore();
    const ctl = new AbortController();
    let seen = 0;
    const progress = { addTotal() {}, bytes: (b: number) => (seen += b) > 1 << 20 && ctl.abort(new Error("stopped by the test")), item() {}, done() {} };
    await expect(transferBlobs(store, jobs(store), { chunkSize: 1 << 20, concurrency: 4, progress, signal: ctl.signal })).rejects.toThrow("stopped by the test");
    for (let i = 0; i < 3; i++) expect(await store.hasBlob(sha(DATA.subarray(i << 22, (i + 1) << 22)))).toBe(false);
    knobs = {};
    const { digests } = await transferBlobs(store, jobs(store), { chunkSize: 1 << 20, concurrency: 4 });
    for (const [i, d] of digests.entries()) expect(Buffer.compare(await fs.readFile(store.blobPath(d)), DATA.subarray(i << 22, (i + 1) << 22))).toBe(0);
  });
});
