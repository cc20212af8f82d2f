/**
 * sha256 (and the git blob oid) of bytes already on disk, computed on worker threads. The main
 * thread of a pull is busy receiving and writing (undici, streams, GC); hashing, ~1.4 GB/s per core,
 * is the largest piece of its work that can move to another core. Files are read back from the page
 * cache (a memcpy) in 1 MiB pieces, synchronously: a hash worker has nothing else to do.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import { POOL_WORKERS, WorkerPool } from "../worker-pool.js";

/** Bytes to hash, in order: a byte range of a file, or bytes at hand (a safetensors header). */
export type HashPart = { file: string; start: number; end: number } | { bytes: Uint8Array };

export interface HashJob {
  parts: HashPart[];
  /** Also compute sha1(gitPrefix + bytes): the git blob oid (see format/git-oid.ts). */
  gitPrefix?: string;
}

export interface HashResult {
  sha256: string;
  git?: string;
  bytes: number;
}

type Request =
  | { op: "job"; job: HashJob }
  | { op: "open"; sid: number; gitPrefix?: string }
  | { op: "update"; sid: number; parts: HashPart[] }
  | { op: "digest"; sid: number }
  | { op: "drop"; sid: number };

/**
 * The hashing itself, the same on a worker and in-process: one-shot jobs, and running hashes fed
 * over several calls (`sid`). Self-contained: its source text is the worker's.
 */
function makeHasher(io: typeof fs, hash: typeof createHash) {
  const buf = Buffer.allocUnsafe(1 << 20);
  type State = { sha: ReturnType<typeof createHash>; git?: ReturnType<typeof createHash>; bytes: number; error?: Error };
  const running = new Map<number, State>();
  const start = (gitPrefix?: string): State => ({ sha: hash("sha256"), ...(gitPrefix !== undefined ? { git: hash("sha1").update(gitPrefix) } : {}), bytes: 0 });
  const feed = (st: State, parts: HashPart[]) => {
    const add = (b: Uint8Array) => {
      st.sha.update(b);
      st.git?.update(b);
      st.bytes += b.length;
    };
    for (const p of parts) {
      if ("bytes" in p) {
        add(p.bytes);
        continue;
      }
      const fd = io.openSync(p.file, "r");
      try {
        for (let pos = p.start; pos < p.end; ) {
          const n = io.readSync(fd, buf, 0, Math.min(buf.length, p.end - pos), pos);
          if (n === 0) throw Object.assign(new Error(`${p.file}: ends ${p.end - pos} bytes short of ${p.end}`), { code: "E_SIZE" });
          add(buf.subarray(0, n));
          pos += n;
        }
      } finally {
        io.closeSync(fd);
      }
    }
  };
  const finish = (st: State): HashResult => {
    if (st.error) throw st.error;
    return { sha256: st.sha.digest("hex"), ...(st.git ? { git: st.git.digest("hex") } : {}), bytes: st.bytes };
  };
  return {
    run(job: HashJob): HashResult {
      const st = start(job.gitPrefix);
      feed(st, job.parts);
      return finish(st);
    },
    open(sid: number, gitPrefix?: string) {
      running.set(sid, start(gitPrefix));
    },
    update(sid: number, parts: HashPart[]) {
      const st = running.get(sid);
      if (!st || st.error) return;
      try {
        feed(st, parts);
      } catch (err) {
        st.error = err as Error; // reported by digest
      }
    },
    digest(sid: number): HashResult {
      const st = running.get(sid);
      running.delete(sid);
      if (!st) throw new Error(`no running hash ${sid}`);
      return finish(st);
    },
    drop(sid: number) {
      running.delete(sid);
    },
  };
}

type Hasher = ReturnType<typeof makeHasher>;

/** The worker's handler: a message of `Request` to the hasher. Self-contained (its source is eval'd). */
function dispatch(hasher: Hasher) {
  return (m: Request): HashResult | undefined => {
    if (m.op === "job") return hasher.run(m.job);
    if (m.op === "open") hasher.open(m.sid, m.gitPrefix);
    else if (m.op === "update") hasher.update(m.sid, m.parts);
    else if (m.op === "digest") return hasher.digest(m.sid);
    else hasher.drop(m.sid);
    return undefined;
  };
}

/**
 * At least two hash workers, even on 2 cores: a pull hashes two streams of the same bytes (each
 * blob, and each file in file order, whose pieces wait for the ones before them), and with one
 * worker both queue behind each other at the end of the transfer while the receiving thread idles.
 * Measured on 2 cores, 512 MB from the Hub emulation, uncapped: 1.30 s against 1.55 s with one
 * (median of 5; from distribution, where only blobs are hashed, the same within noise).
 */
const HASH_WORKERS = Math.max(2, POOL_WORKERS);
const pool = new WorkerPool(`(${dispatch.toString()})((${makeHasher.toString()})(require("node:fs"), require("node:crypto").createHash))`, HASH_WORKERS);
let inProcess: Hasher | undefined;
const local = () => (inProcess ??= makeHasher(fs, createHash));

/**
 * Starts a hash worker now if none runs (it takes tens of milliseconds to boot, on its own thread),
 * so that a transfer's first hash does not wait for it.
 */
export function warmHasher(): void {
  pool.warm();
}

/** Hashes `job` on the least busy worker thread. */
export function hashParts(job: HashJob): Promise<HashResult> {
  const w = pool.pick();
  if (!w) return Promise.resolve().then(() => local().run(job));
  return pool.ask<HashResult>({ op: "job", job }, w);
}

/** A hash fed in order over several calls (a file as its pieces land), on one worker. */
export interface RunningHash {
  update(parts: HashPart[]): void;
  digest(): Promise<HashResult>;
  /** Forgets it (a transfer that failed before the end). */
  drop(): void;
}

export function runningHash(gitPrefix?: string): RunningHash {
  const sid = pool.id();
  const w = pool.pick();
  if (!w) {
    local().open(sid, gitPrefix);
    return {
      update: (parts) => local().update(sid, parts),
      digest: () => Promise.resolve().then(() => local().digest(sid)),
      drop: () => local().drop(sid),
    };
  }
  w.tell({ op: "open", sid, ...(gitPrefix !== undefined ? { gitPrefix } : {}) });
  return {
    update: (parts) => w.tell({ op: "update", sid, parts }),
    digest: () => pool.ask<HashResult>({ op: "digest", sid }, w),
    drop: () => w.tell({ op: "drop", sid }),
  };
}
