/**
 * Receive workers: threads that each hold their own raw sockets (./range-socket.ts) and write what
 * arrives on them straight into the ingests' partial files, so that on a big machine one thread's
 * receiving and writing is not the limit of a pull (measured on the 2-core VM: ~1.4 s of the main
 * thread per GB from a registry; 1.2 GB/s needs several threads doing it).
 *
 * Everything else stays on the main thread: the request's retries, redirects and credentials
 * (./request.ts sees an answer like any other), the journal, progress, stealing, hashing and
 * commit. A worker sends the Range GET and reads the head; the main thread decides what the answer
 * is. The transfer engine then has the worker drain the body into the files (`drainInto`), and is
 * told how far it got every REPORT_EVERY bytes. Any other reader of such an answer (an error body,
 * a redirect's body) gets its bytes copied over as a stream.
 *
 * Only the engine's requests go to workers (the transfer marks its signal: `receiveOffThread`):
 * a body a worker writes to disk never crosses threads, one that is read in memory would.
 */
import os from "node:os";
import { Readable } from "node:stream";
import { Worker } from "node:worker_threads";
import { makeDrain, makeSharedRange, type DrainLimits, type SharedRange } from "../transfer/drain.js";
import { makeVectored, type FileSpan } from "../store/vectored.js";
import { makeRangeSockets, type SocketAnswer, type SocketRequest } from "./range-socket.js";
import { byteWindow } from "./window.js";

/** A worker tells the main thread how far its writes got at least this often (bytes): journal and progress follow. */
const REPORT_EVERY = 512 << 10;

/**
 * Receive workers to use: CAKE_RECEIVE_WORKERS, else one per 4 cores (at most 6), none below 4
 * cores. Measured on 2 cores (518 MB from distribution, median of 9 interleaved): none 1.22 s, one
 * 1.18 s, two 1.28 s: there the cores are busy hashing and serving, and a worker saves nothing.
 */
export function receiveWorkerCount(chosen = chosenCount()): number {
  return chosen ?? Math.min(6, Math.floor(os.availableParallelism() / 4));
}

/** CAKE_RECEIVE_WORKERS, when set. */
function chosenCount(): number | undefined {
  const set = process.env.CAKE_RECEIVE_WORKERS?.trim();
  return set !== undefined && /^\d+$/.test(set) ? Math.min(16, Number(set)) : undefined;
}

/**
 * By default, a transfer smaller than this stays on the main thread: a worker takes ~30 ms to
 * start, and one thread receives 128 MiB in ~0.2 s (39 MB from distribution on 2 cores: 0.295 s
 * on the main thread, 0.325 s with one worker). CAKE_RECEIVE_WORKERS set: every transfer uses them.
 */
const OFF_THREAD_MIN = 128 << 20;

type ToWorker =
  | ({ op: "get"; id: number; url: string } & Omit<SocketRequest, "signal">)
  | { op: "drain"; id: number; bodyStart: number; range: SharedArrayBuffer; spans: FileSpan[]; limits: DrainLimits; reportEvery: number }
  | { op: "read" | "dump" | "destroy" | "abort"; id: number }
  | { op: "close" };

interface WireError {
  message: string;
  code?: string;
  beforeAnswer?: boolean;
  cause?: { message: string; code?: string };
}

type FromWorker = { id: number } & (
  | { head: { statusCode: number; headers: Record<string, string | string[]> } }
  | { none: true }
  | { wrote: number }
  | { drained: number }
  | { chunk: Uint8Array }
  | { eof: true }
  | { dumped: true }
  | { error: WireError; pos?: number }
);

/** What runs in a worker: its own sockets, each answer's body held until the main thread says what to do with it. */
function serveReceives(
  port: import("node:worker_threads").MessagePort,
  sockets: ReturnType<typeof makeRangeSockets>,
  drainBody: ReturnType<typeof makeDrain>,
  sharedRange: ReturnType<typeof makeSharedRange>,
  vectored: ReturnType<typeof makeVectored>,
): void {
  type Exchange = { ac: AbortController; body?: InstanceType<typeof sockets.SocketBody> };
  const exchanges = new Map<number, Exchange>();
  const wire = (err: unknown): WireError => {
    const e = (err ?? {}) as { message?: string; code?: string; beforeAnswer?: boolean; cause?: { message?: string; code?: string } };
    return {
      message: String(e.message ?? err),
      ...(typeof e.code === "string" ? { code: e.code } : {}),
      ...(e.beforeAnswer ? { beforeAnswer: true } : {}),
      ...(e.cause && typeof e.cause === "object" ? { cause: { message: String(e.cause.message), ...(typeof e.cause.code === "string" ? { code: e.cause.code } : {}) } } : {}),
    };
  };
  const post = (m: FromWorker, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
  const end = (id: number, m: FromWorker) => {
    exchanges.delete(id);
    post(m);
  };
  port.postMessage({ started: true });
  port.on("message", (m: ToWorker) => {
    if (m.op === "close") return sockets.closeIdleSockets();
    const x = exchanges.get(m.id);
    switch (m.op) {
      case "get": {
        const ex: Exchange = { ac: new AbortController() };
        exchanges.set(m.id, ex);
        sockets.rangeOverSocket(new URL(m.url), { headers: m.headers, signal: ex.ac.signal, headersTimeout: m.headersTimeout, bodyTimeout: m.bodyTimeout }).then(
          (a) => {
            if (!a) return end(m.id, { id: m.id, none: true });
            ex.body = a.body;
            a.body.on("error", () => {}); // reported to whoever reads it
            post({ id: m.id, head: { statusCode: a.statusCode, headers: a.headers } });
          },
          (err: unknown) => end(m.id, { id: m.id, error: wire(err) }),
        );
        return;
      }
      case "drain": {
        if (!x?.body) return post({ id: m.id, error: { message: "no answer to drain" } });
        const range = sharedRange.open(m.range);
        const st = {
          pos: range.start,
          get end() {
            return range.end;
          },
          claim: range.claim,
          reached: range.reached,
        };
        let told = st.pos;
        drainBody(x.body, m.bodyStart, st, m.limits, {
          write: (at, parts) => vectored.writeSpans(m.spans, at, parts),
          written: (pos) => {
            if (pos - told < m.reportEvery) return;
            told = pos;
            post({ id: m.id, wrote: pos });
          },
          recycle: sockets.recycle,
        }).then(
          () => end(m.id, { id: m.id, drained: st.pos }),
          (err: unknown) => end(m.id, { id: m.id, error: wire(err), pos: st.pos }),
        );
        return;
      }
      case "read": {
        const body = x?.body;
        if (!body) return post({ id: m.id, error: { message: "no answer to read" } });
        // Iterated, not listened to: a body that broke or ended before the main thread asked for it
        // (a server that closed the connection short of its Content-Length) still says so.
        void (async () => {
          try {
            for await (const data of body as AsyncIterable<Uint8Array>) {
              const copy = new Uint8Array(data); // the slab's bytes stay here; a copy of its own moves
              sockets.recycle([data]);
              post({ id: m.id, chunk: copy }, [copy.buffer as ArrayBuffer]);
            }
            end(m.id, { id: m.id, eof: true });
          } catch (err) {
            end(m.id, { id: m.id, error: wire(err) });
          }
        })();
        return;
      }
      case "dump":
        if (!x?.body) return post({ id: m.id, dumped: true });
        x.body.dump().then(() => end(m.id, { id: m.id, dumped: true }));
        return;
      case "destroy":
        exchanges.delete(m.id);
        x?.body?.destroy();
        return;
      case "abort":
        exchanges.delete(m.id);
        x?.ac.abort(Object.assign(new Error("aborted"), { code: "ABORT_ERR" }));
        x?.body?.destroy();
        return;
    }
  });
}

const fromWire = (w: WireError): Error => {
  const err = Object.assign(new Error(w.message), w.code ? { code: w.code } : {}, w.beforeAnswer ? { beforeAnswer: true } : {});
  if (w.cause) (err as { cause?: unknown }).cause = Object.assign(new Error(w.cause.message), w.cause.code ? { code: w.cause.code } : {});
  return err;
};

let workerSource: string | undefined;
const source = () =>
  (workerSource ??= `const { parentPort } = require("node:worker_threads");
(${serveReceives.toString()})(parentPort, (${makeRangeSockets.toString()})(require), (${makeDrain.toString()})(${byteWindow.toString()}), (${makeSharedRange.toString()})(), (${makeVectored.toString()})(require("node:fs").writevSync));`);

/** One worker thread and the exchanges it runs for the main thread, each with its handler here. */
export type { ReceiveWorker };
class ReceiveWorker {
  private readonly worker: Worker;
  /** It has run its code and takes requests at once. */
  started = false;
  private readonly handlers = new Map<number, (m: FromWorker) => void>();
  constructor(onExit: () => void) {
    this.worker = new Worker(source(), { eval: true });
    this.worker.on("message", (m: FromWorker | { started: true }) => {
      if ("started" in m) this.started = true;
      else this.handlers.get(m.id)?.(m);
    });
    const fail = (err: Error) => {
      const hs = [...this.handlers.values()];
      this.handlers.clear();
      this.worker.unref();
      for (const h of hs) h({ id: -1, error: { message: `receive worker: ${err.message}` } });
      onExit();
    };
    this.worker.on("error", fail);
    this.worker.on("exit", (code) => fail(new Error(`exited (code ${code})`)));
    this.worker.unref();
  }

  get load(): number {
    return this.handlers.size;
  }

  tell(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  /** Routes the worker's messages about exchange `id` to `h`; the worker keeps the process alive while any is open. */
  listen(id: number, h: (m: FromWorker) => void): void {
    if (this.handlers.size === 0) this.worker.ref();
    this.handlers.set(id, h);
  }

  forget(id: number): void {
    if (this.handlers.delete(id) && this.handlers.size === 0) this.worker.unref();
  }

  terminate(): void {
    void this.worker.terminate();
  }
}

/**
 * An answer's body that stays in a worker: `drainInto` writes it to files there; reading it as a
 * stream (any other reader) copies its bytes over.
 */
export class RemoteBody extends Readable {
  private reading = false;
  /** The worker is done with this exchange (its body was read whole, dumped, drained or failed). */
  private settled = false;
  private onSettle?: (m: FromWorker) => void;
  private draining = false;

  constructor(
    private readonly w: ReceiveWorker,
    private readonly id: number,
    private readonly signal: AbortSignal | undefined,
  ) {
    super({ objectMode: true });
    w.listen(id, (m) => this.onMessage(m));
    signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  private readonly onAbort = () => {
    const reason = this.signal!.reason instanceof Error ? this.signal!.reason : Object.assign(new Error("aborted"), { code: "ABORT_ERR" });
    if (this.draining) {
      // The drain ends when the worker says so, after its last write: until then the files it writes
      // stay open (a descriptor closed here and reused for another file would take its bytes).
      this.w.tell({ op: "abort", id: this.id });
      return;
    }
    this.finish({ op: "abort", id: this.id });
    const settle = this.onSettle;
    // A dump's caller hears of it through its promise; a stream reader through the stream.
    if (settle) {
      settle({ id: this.id, error: { message: reason.message } });
      this.destroy();
    } else this.destroy(reason);
  };

  /** The exchange is over for the worker (or is to be: `tell`); no more messages about it. */
  private finish(tell?: ToWorker): void {
    if (this.settled) return;
    this.settled = true;
    this.signal?.removeEventListener("abort", this.onAbort);
    this.w.forget(this.id);
    if (tell) this.w.tell(tell);
  }

  private onMessage(m: FromWorker): void {
    if ("chunk" in m) {
      this.push(Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.length));
      return;
    }
    if ("wrote" in m) {
      this.onSettle?.(m);
      return;
    }
    this.finish();
    if ("eof" in m) this.push(null);
    else if ("error" in m && !this.onSettle) this.destroy(fromWire(m.error));
    this.onSettle?.(m);
  }

  override _read(): void {
    if (this.reading || this.settled) return;
    this.reading = true;
    this.w.tell({ op: "read", id: this.id });
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.finish({ op: "destroy", id: this.id });
    cb(err);
  }

  /** Reads and drops the rest in the worker (a big rest closes its connection there), as undici's `dump()`. */
  dump(): Promise<void> {
    if (this.settled) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.onSettle = () => resolve();
      this.w.tell({ op: "dump", id: this.id });
    });
  }

  /**
   * Has the worker write the body's bytes from `range.start` up to its end (which the main thread
   * may move closer meanwhile: drain.ts) into `spans`, `onWrote(pos)` told as they land. Resolves
   * with how far it got; rejects with the error that ended it (`onWrote` has been told how far it
   * got first). Either only once the worker is done writing.
   */
  drainInto(bodyStart: number, range: SharedRange, spans: FileSpan[], limits: DrainLimits, onWrote: (pos: number) => void): Promise<number> {
    if (this.signal?.aborted) {
      // Aborted between the answer's head and now (its listener was not there to see it).
      this.finish({ op: "destroy", id: this.id });
      return Promise.reject(this.signal.reason);
    }
    this.draining = true;
    return new Promise<number>((resolve, reject) => {
      this.onSettle = (m) => {
        if ("wrote" in m) return onWrote(m.wrote);
        if ("drained" in m) {
          receiveCounters.drainedBytes += m.drained - range.start;
          onWrote(m.drained);
          return resolve(m.drained);
        }
        if ("error" in m) {
          if (m.pos !== undefined) {
            receiveCounters.drainedBytes += m.pos - range.start;
            onWrote(m.pos);
          }
          const aborted = this.signal?.aborted;
          return reject(aborted ? this.signal!.reason : fromWire(m.error));
        }
      };
      this.w.tell({ op: "drain", id: this.id, bodyStart, range: range.sab, spans, limits, reportEvery: REPORT_EVERY });
    });
  }
}

/** What receive workers did in this process (for tests and the bench): answers they got, body bytes they wrote. */
export const receiveCounters = { answers: 0, drainedBytes: 0 };

const workers: ReceiveWorker[] = [];
let nextId = 0;
/** Transfers whose answers' bodies may stay in a receive worker (see the file's comment). */
const offThread = new WeakSet<AbortSignal>();

/**
 * Marks a transfer's signal (of `bytes` bytes): its Range requests over raw sockets go to receive
 * workers, when there are any. Starts them. By default a request goes to a worker once one has
 * started (until then, to the main thread); with CAKE_RECEIVE_WORKERS set, every one waits for its worker.
 */
export function receiveOffThread(signal: AbortSignal, bytes: number): void {
  const chosen = chosenCount();
  const n = receiveWorkerCount(chosen);
  if (n === 0 || (chosen === undefined && bytes < OFF_THREAD_MIN)) return;
  offThread.add(signal);
  if (chosen !== undefined) waitForStart.add(signal);
  while (workers.length < n) {
    const w: ReceiveWorker = new ReceiveWorker(() => workers.splice(workers.indexOf(w) >>> 0, 1));
    workers.push(w);
  }
}

/** Transfers whose requests wait for a worker to start rather than go to the main thread meanwhile. */
const waitForStart = new WeakSet<AbortSignal>();

/** The least busy receive worker a request under `signal` goes to; undefined: it stays on this thread. */
export function receiveWorkerFor(signal: AbortSignal | null | undefined): ReceiveWorker | undefined {
  if (!signal || !offThread.has(signal)) return undefined;
  const wait = waitForStart.has(signal);
  let best: ReceiveWorker | undefined;
  for (const w of workers) if ((wait || w.started) && (!best || w.load < best.load)) best = w;
  return best;
}

/**
 * `rangeOverSocket` (./range-socket.ts) in receive worker `w`: the same answer, errors and
 * timeouts, with a body that stays there (RemoteBody).
 */
export function rangeInWorker(w: ReceiveWorker, url: URL, req: SocketRequest): Promise<SocketAnswer | undefined> {
  const signal = req.signal ?? undefined;
  const id = nextId++;
  return new Promise<SocketAnswer | undefined>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      w.forget(id);
      w.tell({ op: "abort", id });
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    w.listen(id, (m) => {
      signal?.removeEventListener("abort", onAbort);
      if ("head" in m) {
        receiveCounters.answers++;
        const body = new RemoteBody(w, id, signal);
        resolve({ ...m.head, body: body as unknown as SocketAnswer["body"] });
        return;
      }
      w.forget(id);
      if ("none" in m) resolve(undefined);
      else if ("error" in m) reject(fromWire(m.error));
    });
    w.tell({ op: "get", id, url: url.toString(), headers: req.headers, headersTimeout: req.headersTimeout, bodyTimeout: req.bodyTimeout });
  });
}

/** Ends the receive workers (their kept-alive sockets with them): a CLI process exits promptly. */
export function closeReceiveWorkers(): void {
  for (const w of workers.splice(0)) w.terminate();
}
