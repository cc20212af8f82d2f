/**
 * Range GETs on raw keep-alive sockets, plain or TLS: the bulk bytes of a pull from a registry or a
 * Hub reached direct (the Hub's CDN, a registry, `cake proxy`'s backend, a mirror).
 * Node's HTTP clients hand every ~64 KiB read to JS as a new Buffer, through a parser and a stream
 * per chunk: measured receiving 512 MiB in 8 MiB ranges, 16 at a time, on 2 cores, undici costs
 * ~1.1 CPU-s per GB, `net.connect` with `onread` ~0.16. Here each socket reads straight into its own
 * 128 KiB slabs (`onread`), and the body hands out views of them: no copy, and the slabs are reused.
 *
 * It is a dispatcher for one kind of request only, under the one retry loop (src/http/request.ts):
 * its answers, errors and timeouts look like undici's (status, lower-case headers, a body with
 * `dump()`; error codes ECONNRESET, UND_ERR_HEADERS_TIMEOUT, UND_ERR_BODY_TIMEOUT), so redirects,
 * retries, cut answers and error statuses are handled as for any other request. An answer without
 * a Content-Length (chunked, or ended by close) is not read here: `rangeOverSocket` gives undefined
 * before any byte of its body is taken, and the request goes through undici instead.
 */
import { createRequire } from "node:module";
import type * as netTypes from "node:net";
import type * as tlsTypes from "node:tls";

/** The answer, shaped as undici's request() gives it (the fields the retry loop and callers read). */
export interface SocketAnswer {
  statusCode: number;
  headers: Record<string, string | string[]>;
  body: SocketBody;
}

export interface SocketRequest {
  headers: Record<string, string>;
  signal?: AbortSignal | null;
  /** No answer's headers within this long (ms; 0: no limit): UND_ERR_HEADERS_TIMEOUT. */
  headersTimeout?: number;
  /** No byte of the body for this long (ms; 0: no limit): UND_ERR_BODY_TIMEOUT. */
  bodyTimeout?: number;
}

/**
 * Whether this request may go over a raw socket: a GET of a Range of an http or https URL, no body.
 * Headers are written as they are, so one with a line break in it (a hostile token, say) is left to
 * undici, which refuses it.
 */
export function isSocketRange(url: URL, opts: { method?: string; body?: unknown; headers?: unknown }): boolean {
  if ((url.protocol !== "http:" && url.protocol !== "https:") || (opts.method ?? "GET") !== "GET" || opts.body !== undefined) return false;
  if (process.env.CAKE_HTTP_SOCKETS === "0") return false;
  const h = opts.headers;
  if (!h || typeof h !== "object" || Array.isArray(h)) return false;
  const entries = Object.entries(h as Record<string, unknown>);
  return entries.some(([k]) => k.toLowerCase() === "range") && entries.every(([k, v]) => typeof v === "string" && !/[\r\n]/.test(k + v));
}

/**
 * The sockets, their slabs and the exchanges on them, made once per thread: the main thread's here
 * below, and one in each receive worker (./receive-workers.ts), which gets this function's source
 * text. So it uses only what it is handed (`require`) and its own body.
 */
export function makeRangeSockets(require: NodeRequire) {
  const net: typeof netTypes = require("node:net");
  const tls: typeof tlsTypes = require("node:tls");
  const { Readable }: typeof import("node:stream") = require("node:stream");

  /**
   * A socket reads into a slab of this size, a view at a time; a slab with less than MIN_READ free is
   * replaced. Small, as the transfer engine's write batches (transfer/defaults.ts, WRITE_BATCH): the
   * bytes of all streams between socket and disk stay in the CPU's cache and a few slabs go round.
   */
  const SLAB_BYTES = 128 << 10;
  const MIN_READ = 32 << 10;
  /** A kept-alive socket unused this long is closed (the server may close it first: then it is dropped). */
  const IDLE_MS = 4_000;
  /** The most an answer's status line and headers may take. */
  const HEAD_LIMIT = 64 << 10;
  /** `dump()` reads up to this much of a body to keep its connection; more, and it closes it. */
  const DUMP_LIMIT = 128 << 10;

  const failure = (message: string, code: string) => Object.assign(new Error(message), { code });

  /**
   * Slabs come back for reuse once every byte read into them was handed back (`recycle`, by the
   * transfer engine once it wrote them to disk): a pull then reads into the same few MiB over and over
   * instead of mapping and unmapping fresh memory for each slab (each costs page faults, and an unmap on a
   * process with busy threads a TLB flush on every core). Bytes never handed back (a small answer read
   * whole, a cut answer) leave their slab to the garbage collector, as any Buffer.
   */
  interface Slab {
    buf: Buffer;
    /** Bytes read into it and not handed back yet. */
    out: number;
    /** No socket reads into it any more: it is free once `out` is 0. */
    retired: boolean;
  }
  const slabs = new WeakMap<ArrayBuffer, Slab>();
  const freeSlabs: Buffer[] = [];
  /** Free slabs kept at most (8 MiB). */
  const FREE_SLABS = 64;

  function newSlab(): Slab {
    const slab = { buf: freeSlabs.pop() ?? Buffer.allocUnsafeSlow(SLAB_BYTES), out: 0, retired: false };
    slabs.set(slab.buf.buffer as ArrayBuffer, slab);
    return slab;
  }

  function freeIfDone(slab: Slab): void {
    if (slab.retired && slab.out === 0 && freeSlabs.length < FREE_SLABS) {
      slabs.delete(slab.buf.buffer as ArrayBuffer);
      freeSlabs.push(slab.buf);
    }
  }

  /**
   * Hands back bytes of answer bodies that nothing reads any more (written to disk): their memory may
   * be read into again. Pieces of any other origin are ignored. Call it once per piece taken from a body.
   */
  function recycle(pieces: readonly Uint8Array[]): void {
    for (const p of pieces) {
      const slab = slabs.get(p.buffer as ArrayBuffer);
      if (!slab) continue;
      slab.out -= p.length;
      freeIfDone(slab);
    }
  }

  /** What a socket's reads go to: the exchange using it now (set per request, cleared between). */
  type Reader = (bytes: Buffer) => void;
  interface PooledSocket extends netTypes.Socket {
    reader?: Reader;
    /** The exchange's handlers for the socket's error and close, while it has one. */
    onError?: (err: Error) => void;
    onClose?: () => void;
    idleTimer?: NodeJS.Timeout;
    origin: string;
  }

  const idle = new Map<string, PooledSocket[]>();
  /** Each TLS origin's latest session (a few hundred bytes; one per origin a process has read from). */
  const tlsSessions = new Map<string, Buffer>();
  const portOf = (url: URL) => Number(url.port || (url.protocol === "https:" ? 443 : 80));
  /** What kept-alive sockets are pooled by. */
  const originOf = (url: URL) => `${url.protocol}//${url.hostname}:${portOf(url)}`;

  function connect(url: URL): PooledSocket {
    const port = portOf(url);
    const host = url.hostname.replace(/^\[|\]$/g, "");
    // Each socket has its own slab: Node asks for the next read's buffer as soon as a read is handed
    // over and holds it until the socket's next read, so a region handed out is that socket's alone.
    let slab = newSlab();
    let used = 0;
    const onread: netTypes.OnReadOpts = {
      buffer: () => {
        if (slab.buf.length - used < MIN_READ) {
          slab.retired = true;
          freeIfDone(slab);
          slab = newSlab();
          used = 0;
        }
        return slab.buf.subarray(used);
      },
      callback: (n: number, buf: Uint8Array) => {
        // The bytes stay where they were read (the body hands out views): the next read goes after them.
        used += n;
        slab.out += n;
        const bytes = buf as Buffer;
        sock.reader?.(bytes.subarray(0, n));
        return true;
      },
    };
    const origin = originOf(url);
    let raw: netTypes.Socket;
    if (url.protocol === "https:") {
      // The certificate is checked against the system's and NODE_EXTRA_CA_CERTS's authorities and the
      // host name, as undici checks it; the cleartext is read into the slabs the same way. The origin's
      // last TLS session is offered: the streams after the first resume it instead of a full handshake.
      // (`onread` is a net option tls.connect passes on; its type does not list it.)
      raw = tls.connect({ host, port, ALPNProtocols: ["http/1.1"], session: tlsSessions.get(origin), onread } as tlsTypes.ConnectionOptions);
      raw.setNoDelay(true);
      raw.on("session", (session: Buffer) => tlsSessions.set(origin, session));
    } else raw = net.connect({ host, port, noDelay: true, onread });
    const sock: PooledSocket = Object.assign(raw, { origin });
    sock.on("error", (err: Error) => sock.onError?.(err));
    sock.once("close", () => {
      // Its slab is done with once its bytes come back; kept alive, it leaves the pool.
      slab.retired = true;
      freeIfDone(slab);
      const list = idle.get(sock.origin);
      const i = list?.indexOf(sock) ?? -1;
      if (i >= 0) list!.splice(i, 1);
      sock.onClose?.();
    });
    return sock;
  }

  function takeIdle(origin: string): PooledSocket | undefined {
    const list = idle.get(origin);
    for (let s = list?.pop(); s; s = list?.pop()) {
      clearTimeout(s.idleTimer);
      if (!s.destroyed && s.readyState === "open") return s;
    }
    return undefined;
  }

  function release(sock: PooledSocket): void {
    sock.reader = sock.onError = sock.onClose = undefined;
    sock.resume();
    sock.idleTimer = setTimeout(() => sock.destroy(), IDLE_MS).unref();
    const list = idle.get(sock.origin) ?? [];
    list.push(sock);
    idle.set(sock.origin, list);
  }

  /** The body of an answer: views of the socket's reads, exactly Content-Length bytes. */
  class SocketBody extends Readable {
    /** Bytes still to come; 0 once whole. */
    left: number;
    constructor(
      length: number,
      private readonly sock: PooledSocket,
    ) {
      // Chunk by chunk (object mode): a byte-mode read() hands over everything buffered, copied into one
      // Buffer. A read is up to a slab (128 KiB): a few waiting are enough, more is memory and bytes in flight.
      super({ objectMode: true, highWaterMark: 4 });
      this.left = length;
    }

    override _read(): void {
      this.sock.resume();
    }

    override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
      // Cut short: the rest of this answer is still on the wire, so its connection cannot serve another.
      if (this.left > 0) this.sock.destroy();
      cb(err);
    }

    /** Reads and drops the rest (a small one; a big one closes its connection), as undici's `dump()`. */
    async dump(): Promise<void> {
      if (this.left > DUMP_LIMIT || this.destroyed) {
        this.destroy();
        return;
      }
      this.resume();
      await new Promise<void>((resolve) => {
        this.once("end", resolve);
        this.once("close", resolve);
        this.once("error", () => resolve());
      });
    }
  }

  const isAbort = (signal: AbortSignal | null | undefined) => !!signal?.aborted;

  /**
   * Sends the GET on a kept-alive socket to `url`'s origin (or a new one) and reads the answer's head;
   * undefined when the answer has no Content-Length (the caller sends the request the usual way).
   * Rejects with network-style errors (connection closed before the head, a timeout, the signal's
   * reason) that the retry loop treats as undici's.
   */
  async function rangeOverSocket(url: URL, req: SocketRequest): Promise<SocketAnswer | undefined> {
    const kept = takeIdle(originOf(url));
    if (!kept) return exchangeOn(connect(url), url, req);
    // A kept-alive connection the server closed meanwhile fails before any byte of the answer: that
    // is not the request's failure, and it goes once more on a new connection.
    return exchangeOn(kept, url, req).catch((err: unknown) => {
      if ((err as { beforeAnswer?: boolean }).beforeAnswer && !isAbort(req.signal)) return exchangeOn(connect(url), url, req);
      throw err;
    });
  }

  function exchangeOn(sock: PooledSocket, url: URL, req: SocketRequest): Promise<SocketAnswer | undefined> {
    return new Promise<SocketAnswer | undefined>((resolve, reject) => {
      let head: Buffer = Buffer.alloc(0);
      let body: SocketBody | undefined;
      let timer: NodeJS.Timeout | undefined;
      /** The answer leaves its connection open for the next request (no `Connection: close`). */
      let keepAlive = true;
      const signal = req.signal ?? undefined;
      const headersMs = req.headersTimeout ?? 0;
      const bodyMs = req.bodyTimeout ?? 0;

      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      /** Done with the socket for good: nothing more of it is read. */
      const drop = () => {
        cleanup();
        sock.reader = sock.onError = sock.onClose = undefined;
        sock.destroy();
      };
      /** Fails the exchange: the promise before the head, the body after it. */
      const fail = (err: Error) => {
        drop();
        if (body) body.destroy(err);
        else reject(err);
      };
      const onAbort = () => fail(signal!.reason instanceof Error ? signal!.reason : failure("aborted", "ABORT_ERR"));
      const arm = (ms: number, code: string, what: string) => {
        clearTimeout(timer);
        if (ms > 0) timer = setTimeout(() => fail(failure(`${what} (${ms} ms)`, code)), ms).unref();
      };

      const onBody = (bytes: Buffer) => {
        const b = body!;
        if (bytes.length > b.left) return fail(failure("more bytes than the answer's Content-Length", "UND_ERR_SOCKET"));
        b.left -= bytes.length;
        arm(bodyMs, "UND_ERR_BODY_TIMEOUT", "body timeout");
        const more = b.push(bytes);
        if (b.left === 0) {
          b.push(null);
          if (keepAlive) {
            cleanup();
            release(sock);
          } else drop();
        } else if (!more) sock.pause();
      };

      const onHead = (bytes: Buffer) => {
        // The first read usually holds the head and the body's first bytes: those stay a view of the
        // slab (recycled as any body bytes); only a head split over reads is gathered in a copy.
        const joined = head.length ? Buffer.concat([head, bytes]) : bytes;
        const end = joined.indexOf("\r\n\r\n");
        if (end < 0) {
          head = Buffer.from(joined);
          recycle([bytes]);
          if (head.length > HEAD_LIMIT) fail(failure("answer headers over 64 KiB", "UND_ERR_SOCKET"));
          return;
        }
        // The slab bytes of the head are parsed below and not kept: handed back now.
        recycle([joined === bytes ? bytes.subarray(0, end + 4) : bytes]);
        head = joined;
        const lines = head.subarray(0, end).toString("latin1").split("\r\n");
        const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!);
        if (!status) return fail(failure(`not an HTTP answer: ${lines[0]!.slice(0, 40)}`, "UND_ERR_SOCKET"));
        const headers: Record<string, string | string[]> = {};
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(":");
          if (colon <= 0) continue;
          const name = line.slice(0, colon).trim().toLowerCase();
          const value = line.slice(colon + 1).trim();
          const had = headers[name];
          headers[name] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
        }
        const statusCode = Number(status[1]);
        const length = typeof headers["content-length"] === "string" && /^\d+$/.test(headers["content-length"]) ? Number(headers["content-length"]) : undefined;
        const chunked = headers["transfer-encoding"] !== undefined;
        if (length === undefined || chunked || (statusCode >= 100 && statusCode < 200)) {
          // Not this reader's kind of answer: dropped, sent again through undici.
          drop();
          resolve(undefined);
          return;
        }
        // An answer that closes its connection is read whole, and its socket is not kept.
        keepAlive = !/\bclose\b/i.test(String(headers["connection"] ?? ""));
        body = new SocketBody(length, sock);
        sock.reader = onBody;
        arm(bodyMs, "UND_ERR_BODY_TIMEOUT", "body timeout");
        resolve({ statusCode, headers, body });
        const rest = head.subarray(end + 4);
        if (rest.length || length === 0) onBody(rest);
      };

      if (isAbort(signal)) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      sock.reader = onHead;
      /** Nothing of the answer came (a kept-alive connection closed by the server as the request went out). */
      const mark = (err: Error) => (head.length === 0 && !body ? Object.assign(err, { beforeAnswer: true }) : err);
      sock.onError = (err: Error) => fail(mark(err));
      sock.onClose = () => {
        if (!body || body.left > 0) fail(mark(failure("other side closed", "ECONNRESET")));
      };
      arm(headersMs, "UND_ERR_HEADERS_TIMEOUT", "headers timeout");
      const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `host: ${url.host}`];
      for (const [k, v] of Object.entries(req.headers)) if (k.toLowerCase() !== "host") lines.push(`${k}: ${v}`);
      sock.write(`${lines.join("\r\n")}\r\n\r\n`);
    });
  }

  /** Closes every kept-alive socket (a CLI process exits promptly). */
  function closeIdleSockets(): void {
    for (const list of idle.values()) for (const s of list.splice(0)) s.destroy();
  }

  return { rangeOverSocket, recycle, closeIdleSockets, SocketBody };
}

export type RangeSockets = ReturnType<typeof makeRangeSockets>;
export const { rangeOverSocket, recycle, closeIdleSockets, SocketBody } = makeRangeSockets(createRequire(import.meta.url));
export type SocketBody = InstanceType<typeof SocketBody>;
