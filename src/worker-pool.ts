/**
 * Worker threads that run one self-contained handler, shared by the hash workers (store/hasher.ts)
 * and the codec's frame workers (codec/parallel.ts). The handler is source text (a factory
 * function's `toString()`, eval'd in the worker): it then needs no file of its own, the same whether
 * cake runs from dist/ (bundled) or its TypeScript runs under the test runner. So a handler's factory
 * may use only what it is handed (`require`) and its own body.
 */
import os from "node:os";
import { parentPort, Worker } from "node:worker_threads";
import { CakeError, type ErrorCode } from "./errors.js";

/** A message a worker answers (`id`), or one it only takes in (no `id`). */
export type PoolMessage = { id?: number } & Record<string, unknown>;
type Reply = { id: number; result?: unknown; error?: { message: string; code?: string } };

/**
 * What runs in the worker: `factory(require)` returns the handler, called with each message;
 * what it returns (for a message with an `id`) goes back. A Uint8Array result that owns its whole
 * buffer is moved, not copied. An error whose `code` starts with `E_` comes back a CakeError.
 */
function serve(port: import("node:worker_threads").MessagePort, handle: (m: PoolMessage) => unknown): void {
  port.on("message", (m: PoolMessage) => {
    if (m.id === undefined) {
      handle(m);
      return;
    }
    try {
      const result = handle(m);
      const own = result instanceof Uint8Array && result.byteOffset === 0 && result.byteLength === result.buffer.byteLength;
      port.postMessage({ id: m.id, result }, own ? [result.buffer as ArrayBuffer] : []);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      port.postMessage({ id: m.id, error: { message: e.message, ...(e.code ? { code: e.code } : {}) } });
    }
  });
}

class PoolWorker {
  private readonly pending = new Map<number, { resolve: (r: unknown) => void; reject: (e: Error) => void }>();
  private readonly worker: Worker;
  constructor(source: string, onExit: () => void) {
    this.worker = new Worker(source, { eval: true });
    this.worker.on("message", ({ id, result, error }: Reply) => {
      const p = this.pending.get(id)!;
      this.pending.delete(id);
      if (this.pending.size === 0) this.worker.unref();
      if (!error) p.resolve(result);
      else p.reject(error.code?.startsWith("E_") ? new CakeError(error.code as ErrorCode, error.message) : Object.assign(new Error(error.message), error));
    });
    const fail = (err: Error) => {
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      onExit();
    };
    this.worker.on("error", fail);
    this.worker.on("exit", (code) => fail(new Error(`worker exited (code ${code})`)));
    // An idle worker must not keep cake running. After the listeners: adding a "message" listener
    // refs the worker's port again.
    this.worker.unref();
  }
  get load() {
    return this.pending.size;
  }
  /** Sends `m` (given an `id` here), which answers. `transfer`: buffers moved to the worker. */
  ask<T>(m: PoolMessage, id: number, transfer: ArrayBuffer[] = []): Promise<T> {
    return new Promise<unknown>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref(); // a job in flight keeps the process alive
      this.worker.postMessage({ ...m, id }, transfer);
    }) as Promise<T>;
  }
  tell(m: PoolMessage): void {
    this.worker.postMessage(m);
  }
}

export type { PoolWorker };

/** Workers: one fewer than the cores (the main thread keeps one), at least 1, at most 4. */
export const POOL_WORKERS = Math.max(1, Math.min(4, os.availableParallelism() - 1));

export class WorkerPool {
  private readonly workers: PoolWorker[] = [];
  private readonly source: string;
  private nextId = 0;

  /**
   * `handler`: source text of an expression, evaluated in the worker with `require` in scope, that
   * is the handler (see `serve`): e.g. `(${dispatch})((${makeState})(require("node:fs")))`.
   */
  constructor(handler: string, readonly size = POOL_WORKERS) {
    this.source = `const { parentPort } = require("node:worker_threads");
(${serve.toString()})(parentPort, ${handler});`;
  }

  /** The least busy worker (started on first use); undefined when already off the main thread. */
  pick(): PoolWorker | undefined {
    if (parentPort) return undefined;
    const w = this.workers.reduce<PoolWorker | undefined>((best, x) => (!best || x.load < best.load ? x : best), undefined);
    if (w && (w.load === 0 || this.workers.length >= this.size)) return w;
    const fresh: PoolWorker = new PoolWorker(this.source, () => this.workers.splice(this.workers.indexOf(fresh) >>> 0, 1));
    this.workers.push(fresh);
    return fresh;
  }

  /** A worker with nothing to do (started if the pool has room); undefined when every one is busy, or off the main thread. */
  idle(): PoolWorker | undefined {
    const w = this.pick();
    return w && w.load === 0 ? w : undefined;
  }

  /** Starts a worker now if none runs (it takes tens of milliseconds to boot, on its own thread). */
  warm(): void {
    if (!parentPort && this.workers.length === 0) this.pick();
  }

  /** A fresh message id (also for running state a handler keeps between messages). */
  id(): number {
    return this.nextId++;
  }

  /** Runs `m` on `w` (default: the least busy worker). */
  ask<T>(m: PoolMessage, w = this.pick(), transfer: ArrayBuffer[] = []): Promise<T> {
    if (!w) throw new CakeError("E_IO", "no worker off the main thread");
    return w.ask<T>(m, this.id(), transfer);
  }
}
