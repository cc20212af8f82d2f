/**
 * Frames encoded and decoded on worker threads (the pool the hash workers use: src/worker-pool.ts),
 * small ones in-process, where a worker's round trip would cost more than the work.
 */
import zlib from "node:zlib";
import { WorkerPool } from "../worker-pool.js";
import { makeFrameCodec, type FrameCodec, type FrameRequest } from "./frame.js";
import { makeHuffman } from "./huffman.js";
import { makeKernels } from "./kernels.js";

type Request = ({ op: "encode" } & FrameRequest) | { op: "decode"; frame: Uint8Array; rawLength: number; maxWidth: number };

/** The worker's handler. Self-contained (its source is eval'd). */
function dispatch(codec: FrameCodec) {
  return (m: Request): Uint8Array => (m.op === "encode" ? codec.encode(m) : codec.decode(m.frame, m.rawLength, m.maxWidth));
}

/** The codec as the worker makes it: each part's source text, so the workers run the same code. */
const codecSource = `(() => { const k = (${makeKernels.toString()})(); return (${makeFrameCodec.toString()})(require("node:zlib"), k, (${makeHuffman.toString()})(k)); })()`;
const pool = new WorkerPool(`(${dispatch.toString()})(${codecSource})`);
let inProcess: FrameCodec | undefined;
const local = () => {
  if (inProcess) return inProcess;
  const kernels = makeKernels();
  return (inProcess = makeFrameCodec(zlib, kernels, makeHuffman(kernels)));
};
/** Below this many bytes a frame is coded on the calling thread. */
const IN_PROCESS_BYTES = 64 << 10;

/** What can be moved to a worker instead of copied: a buffer the array owns whole. */
const movable = (b: Uint8Array) => (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && !(b.buffer instanceof SharedArrayBuffer) ? [b.buffer as ArrayBuffer] : []);

/** Whether this thread is coding a frame now (it takes one at a time, between its reads and writes). */
let codingHere = false;

/** Runs `code` on this thread at its next turn, marked as coding here meanwhile. */
function here<T>(code: () => T): Promise<T> {
  codingHere = true;
  return new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
    try {
      return code();
    } finally {
      codingHere = false;
    }
  });
}

/**
 * The worker a frame of `bytes` goes to, or undefined to code it on this thread: a small frame here
 * (a round trip would cost more); else an idle worker; when every worker is busy, this thread if it
 * codes nothing else (a reader or writer waiting for frames has nothing else to do: on 2 cores, one
 * worker and this thread code at twice one worker's rate). `workersOnly`: never this thread (work in
 * the background of one that has better things to do, as a pull's receiving).
 */
function threadFor(bytes: number, workersOnly: boolean) {
  if (bytes < IN_PROCESS_BYTES) return undefined;
  return workersOnly ? pool.pick() : (pool.idle() ?? (codingHere ? pool.pick() : undefined));
}

/** Encodes one frame (see frame.ts). `raw` may be moved to a worker: the caller must not use it after. */
export function encodeFrame(req: FrameRequest, workersOnly = false): Promise<Uint8Array> {
  const w = threadFor(req.raw.length, workersOnly);
  if (!w) return here(() => local().encode(req));
  return pool.ask<Uint8Array>({ op: "encode", raw: req.raw, width: req.width }, w, movable(req.raw));
}

/** Decodes one frame; rejects with E_DIGEST (a bare reason: the caller names the blob) when it is corrupt. */
export function decodeFrame(frame: Uint8Array, rawLength: number, maxWidth: number, workersOnly = false): Promise<Uint8Array> {
  const w = threadFor(rawLength, workersOnly);
  if (!w) return here(() => local().decode(frame, rawLength, maxWidth));
  return pool.ask<Uint8Array>({ op: "decode", frame, rawLength, maxWidth }, w, movable(frame));
}

/** Frames in flight at once: enough to keep every worker busy while the main thread reads and writes. */
export const FRAMES_IN_FLIGHT = 2 * (pool.size + 1);
