/**
 * sha256 (and the git blob oid) of bytes already on disk, computed on worker threads. The main
 * thread of a pull is busy receiving and writing (undici, streams, GC); hashing, ~1.4 GB/s per core,
 * is the largest piece of its work that can move to another core. Files are read back from the page
 * cache (a memcpy) in 1 MiB pieces, synchronously: a hash worker has nothing else to do.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import { parentPort, Worker, type MessagePort } from "node:worker_threads";
import { CakeError } from "../errors.js";

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
  | { op: "job"; id: number; job: HashJob }
  | { op: "open"; sid: number; gitPrefix?: string }
  | { op: "update"; sid: number; parts: HashPart[] }
  | { op: "digest"; id: number; sid: number }
  | { op: "drop"; sid: number };
type Reply = { id: number; result?: HashResult; error?: { message: string; code?: string } };

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

function serve(port: MessagePort, hasher: Hasher): void {
  const reply = (id: number, fn: () => HashResult) => {
    try {
      port.postMessage({ id, result: fn() } satisfies Reply);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      port.postMessage({ id, error: { message: e.message, ...(e.code ? { code: e.code } : {}) } } satisfies Reply);
    }
  };
  port.on("message", (m: Request) => {
    if (m.op === "job") reply(m.id, () => hasher.run(m.job));
    else if (m.op === "open") hasher.open(m.sid, m.gitPrefix);
    else if (m.op === "update") hasher.update(m.sid, m.parts);
    else if (m.op === "digest") reply(m.id, () => hasher.digest(m.sid));
    else hasher.drop(m.sid);
  });
}

// The worker is this file's two functions as source text (eval): it then needs no path of its own,
// the same whether cake runs from dist/ or its TypeScript runs under the test runner.
const WORKER_SOURCE = `const { parentPort } = require("node:worker_threads");
(${serve.toString()})(parentPort, (${makeHasher.toString()})(require("node:fs"), require("node:crypto").createHash));`;

class HashWorker {
  private readonly pending = new Map<number, { resolve: (r: HashResult) => void; reject: (e: Error) => void }>();
  private readonly worker: Worker;
  constructor(private readonly onExit: () => void) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true });
    this.worker.on("message", ({ id, result, error }: Reply) => {
      const p = this.pending.get(id)!;
      this.pending.delete(id);
      if (this.pending.size === 0) this.worker.unref();
      if (result) p.resolve(result);
      else p.reject(error!.code === "E_SIZE" ? new CakeError("E_SIZE", error!.message) : Object.assign(new Error(error!.message), error));
    });
    const fail = (err: Error) => {
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      this.onExit();
    };
    this.worker.on("error", fail);
    this.worker.on("exit", (code) => fail(new Error(`hash worker exited (code ${code})`)));
    // An idle worker must not keep cake running. After the listeners: adding a "message" listener
    // refs the worker's port again.
    this.worker.unref();
  }
  get load() {
    return this.pending.size;
  }
  /** Sends `m`, which answers with a result. */
  ask(m: Extract<Request, { id: number }>): Promise<HashResult> {
    return new Promise((resolve, reject) => {
      this.pending.set(m.id, { resolve, reject });
      this.worker.ref(); // a job in flight keeps the process alive
      this.worker.postMessage(m);
    });
  }
  tell(m: Exclude<Request, { id: number }>): void {
    this.worker.postMessage(m);
  }
}

/** Hash workers: one fewer than the cores (the main thread keeps one), at least 1, at most 4. */
const WORKERS = Math.max(1, Math.min(4, os.availableParallelism() - 1));
const workers: HashWorker[] = [];
let nextId = 0;
let inProcess: Hasher | undefined;
const local = () => (inProcess ??= makeHasher(fs, createHash));

/** The least busy worker (started on first use); undefined when already off the main thread. */
function pick(): HashWorker | undefined {
  if (parentPort) return undefined;
  const w = workers.reduce<HashWorker | undefined>((best, x) => (!best || x.load < best.load ? x : best), undefined);
  if (w && (w.load === 0 || workers.length >= WORKERS)) return w;
  const fresh: HashWorker = new HashWorker(() => workers.splice(workers.indexOf(fresh) >>> 0, 1));
  workers.push(fresh);
  return fresh;
}

/**
 * Starts a hash worker now if none runs (it takes tens of milliseconds to boot, on its own thread),
 * so that a transfer's first hash does not wait for it.
 */
export function warmHasher(): void {
  if (!parentPort && workers.length === 0) pick();
}

/** Hashes `job` on the least busy worker thread. */
export function hashParts(job: HashJob): Promise<HashResult> {
  const w = pick();
  if (!w) return Promise.resolve().then(() => local().run(job));
  return w.ask({ op: "job", id: nextId++, job });
}

/** A hash fed in order over several calls (a file as its pieces land), on one worker. */
export interface RunningHash {
  update(parts: HashPart[]): void;
  digest(): Promise<HashResult>;
  /** Forgets it (a transfer that failed before the end). */
  drop(): void;
}

export function runningHash(gitPrefix?: string): RunningHash {
  const sid = nextId++;
  const w = pick();
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
    digest: () => w.ask({ op: "digest", id: nextId++, sid }),
    drop: () => w.tell({ op: "drop", sid }),
  };
}
