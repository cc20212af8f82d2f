/**
 * One HTTP request, done the way every cake client needs it: shared keep-alive pools, redirects
 * followed by hand so that Authorization never leaves the origin it was meant for (the Hub's 302 to
 * its CDN, a registry's 307 to S3), and one retry discipline for every request: a reset, a cut
 * answer, a timeout, 408/429/5xx are tried again with backoff and jitter, a server's Retry-After or
 * RateLimit reset honoured up to a bound (src/http/retry.ts).
 *
 * `httpRequest` hands back the streaming body (the caller owns it and must consume or `dump()` it);
 * a body cut after that is the caller's to resume (the transfer engine continues Range requests from
 * their last byte). `httpReadAll` reads a small answer whole inside the same loop: a cut JSON answer
 * is asked again whole, a cut Range answer continues from its last byte.
 */
import type { Readable } from "node:stream";
import type { Dispatcher } from "undici";
import { CakeError } from "../errors.js";
import { formatBytes } from "../units.js";
import { dispatchRequest, sharedDispatcher } from "./agent.js";
import { DEFAULT_RETRY, RETRYABLE_STATUS, backoffDelay, describeError, isNetworkError, noticeRetry, noticeWait, serverWait, sleep, type RetryPolicy, type ServerWait } from "./retry.js";
import { HTTP_TIMEOUTS, STALLED_TRIES, UPLOAD_ANSWER_MS, deadlineError, describeTimeout, type HttpTimeouts } from "./timeouts.js";
import { byteWindow } from "./window.js";

export type HttpMethod = "GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE";

export interface HttpRequest {
  method?: HttpMethod;
  headers?: Record<string, string>;
  /** A body, or a function making a fresh one for each attempt (so the request can be retried). */
  body?: string | Buffer | (() => Dispatcher.DispatchOptions["body"]);
  signal?: AbortSignal;
  /** Follow redirects (default true). Off when the caller wants the Location itself. */
  followRedirects?: boolean;
  retry?: Partial<RetryPolicy>;
  /** Statuses that are final answers even if normally retried (e.g. a 5xx a test provokes). */
  noRetryStatus?: number[];
  dispatcher?: Dispatcher;
  /** Whether a redirect from `from` to `to` (another origin) still goes to the party the credentials are for (the Hub's two host names); default: never. */
  sameParty?: (from: URL, to: URL) => boolean;
  /** The stall limits (src/http/timeouts.ts); default from the environment. */
  timeouts?: Partial<HttpTimeouts>;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData["body"];
  /** The URL that answered, after redirects. */
  url: string;
  /** How many times the request was sent (1 when the first answer was the final one). */
  tries: number;
}

/** A whole answer, read into memory. */
export interface HttpDocument extends Omit<HttpResponse, "body"> {
  bytes: Buffer;
}

export const header = (h: HttpResponse["headers"], name: string): string | undefined => {
  const v = h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
};

/** A URL as it may be printed: no credentials, no query (signed URLs carry their signature there). */
export function displayUrl(url: string | URL): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}${u.search ? "?…" : ""}`;
  } catch {
    return String(url).replace(/\?.*$/, "?…");
  }
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * The answer's body broke off while it was read (a reset, a proxy or load balancer cutting it): the
 * request is worth another try. `progressed`: bytes of it were kept (a Range read continues from them).
 */
class CutAnswer extends Error {
  constructor(
    cause: unknown,
    readonly progressed = false,
    readonly detail = "connection closed",
  ) {
    super(detail, { cause });
  }
}

/** The peer (or something between) closed the connection: undici says "other side closed", node "socket hang up". */
const isClosed = (err: unknown) => ["UND_ERR_SOCKET", "ECONNRESET", "EPIPE"].includes((err as { code?: string })?.code ?? "");

/** " (3 tries)"; nothing for a request sent once (CAKE_HTTP_RETRIES=0, or a failure not worth another). */
const tries = (n: number) => (n > 1 ? ` (${n} tries)` : "");

/**
 * The retry loop every request goes through. `consume` turns a final answer into the result; when
 * it throws a CutAnswer, the request is sent again (counting as a try) after the usual backoff. A
 * try that kept bytes (a Range read that got further) earns a fresh budget of tries, as a transfer
 * stream does (src/transfer/fetch-range.ts). `progress` says how far a read got, for the last message.
 */
async function exchange<T>(url: string, req: HttpRequest, consume: (res: HttpResponse) => Promise<T>, progress?: () => string | undefined, deadlineMs = 0): Promise<T> {
  const policy = { ...DEFAULT_RETRY, ...req.retry };
  const { idleMs, documentMs } = { ...HTTP_TIMEOUTS, ...req.timeouts };
  // undici's 0 means no limit, as ours does.
  const headersMs = req.body !== undefined && idleMs > 0 ? Math.max(idleMs, UPLOAD_ANSWER_MS) : idleMs;
  const waits = { idleMs, documentMs, headersMs };
  let method: HttpMethod = req.method ?? "GET";
  // Read at every try: a consumer may change them for the next (httpReadAll's Range continuation).
  const given = req.headers ?? {};
  let offOrigin = false;
  const headersNow = () => (offOrigin ? Object.fromEntries(Object.entries(given).filter(([k]) => k.toLowerCase() !== "authorization")) : { ...given });
  let target = new URL(url);
  const origin0 = target.origin;
  let body = req.body;
  /** Tries since the last progress (the budget), and sent in all (what the message says). */
  let attempt = 0;
  let sent = 0;
  /** Tries ended by a timeout: never reset by progress, so a trickling peer cannot keep a request alive. */
  let stalled = 0;
  let redirects = 0;
  const failed = (err: unknown, what: string): never => {
    if (req.signal?.aborted) throw req.signal.reason ?? err;
    what = describeTimeout(err, waits) ?? what;
    const got = progress?.();
    throw new CakeError("E_NETWORK", `${method} ${displayUrl(target)}: ${what}${got ? ` after ${got}` : ""}${tries(sent)}`, { cause: err });
  };
  /** Whether another try is allowed, given what the server asked for (a wait past the bound: no). */
  const mayRetry = (wait?: ServerWait) => attempt <= policy.retries && stalled < STALLED_TRIES && !req.signal?.aborted && !(wait && wait.ms > policy.maxServerWaitMs);
  const noteStall = (err: unknown) => {
    if (describeTimeout(err, waits)) stalled++;
  };
  /** Waits before the next try: what the server asked for, else backoff with jitter. */
  const pause = async (why: string, wait?: ServerWait) => {
    const ms = wait?.ms ?? backoffDelay(attempt, policy);
    if (wait) noticeWait(`${method} ${displayUrl(target)}`, ms, wait.reason);
    else if (attempt === 2) noticeRetry(`${method} ${displayUrl(target)}`, why, sent + 1, policy.retries + 1);
    await sleep(ms, req.signal);
  };
  for (;;) {
    attempt++;
    sent++;
    let res: Dispatcher.ResponseData;
    // A small document's try is abandoned at its deadline once its answer has begun, however the bytes
    // trickle. The wait for the answer's headers is the idle timeout's: a registry may take its time to
    // answer (a cake proxy converting a model says 102 Processing meanwhile, which renews that timeout).
    const deadline = deadlineMs > 0 ? new AbortController() : undefined;
    let timer: NodeJS.Timeout | undefined;
    const signal = deadline ? (req.signal ? AbortSignal.any([req.signal, deadline.signal]) : deadline.signal) : req.signal;
    try {
      res = await dispatchRequest(req.dispatcher ?? (await sharedDispatcher()), target, {
        method,
        headers: headersNow(),
        body: typeof body === "function" ? body() : body,
        signal,
        headersTimeout: headersMs,
        bodyTimeout: idleMs,
      });
    } catch (err) {
      clearTimeout(timer);
      if (!isNetworkError(err)) throw err;
      noteStall(err);
      const why = isClosed(err) ? "connection closed" : describeError(err);
      if (!mayRetry()) return failed(err, why);
      await pause(why);
      continue;
    }
    if (deadline) timer = setTimeout(() => deadline.abort(deadlineError()), deadlineMs);
    const { statusCode: status } = res;
    if (REDIRECTS.has(status) && req.followRedirects !== false && res.headers.location) {
      clearTimeout(timer);
      await res.body.dump();
      if (++redirects > 10) throw new CakeError("E_HTTP", `${displayUrl(url)}: too many redirects`);
      const loc = Array.isArray(res.headers.location) ? res.headers.location[0]! : res.headers.location;
      target = new URL(loc, target);
      // Credentials are for the origin they were given for, never for a CDN or storage backend.
      if (target.origin !== origin0 && !req.sameParty?.(new URL(origin0), target)) offOrigin = true;
      if (status === 303) {
        method = method === "HEAD" ? "HEAD" : "GET";
        body = undefined;
      }
      attempt--; // a redirect is not a failure
      sent--;
      continue;
    }
    const replayable = body === undefined || typeof body !== "object" || Buffer.isBuffer(body);
    if (RETRYABLE_STATUS.has(status) && !req.noRetryStatus?.includes(status) && replayable) {
      const wait = serverWait(status, res.headers);
      if (mayRetry(wait)) {
        clearTimeout(timer);
        await res.body.dump();
        await pause(`HTTP ${status}`, wait);
        continue;
      }
    }
    try {
      return await consume({ status, headers: res.headers, body: res.body, url: target.toString(), tries: sent });
    } catch (err) {
      clearTimeout(timer);
      if (!(err instanceof CutAnswer)) throw err;
      noteStall(err.cause);
      if (err.progressed) attempt = 0;
      if (!mayRetry()) return failed(err.cause, err.detail);
      await pause(err.detail);
    } finally {
      clearTimeout(timer);
    }
  }
}

export function httpRequest(url: string, req: HttpRequest = {}): Promise<HttpResponse> {
  return exchange(url, req, async (res) => res);
}

/** `bytes=a-b` or `bytes=a-` as numbers (end exclusive); undefined for anything else. */
function parseRangeHeader(value: string | undefined): { start: number; end?: number } | undefined {
  const m = value ? /^bytes=(\d+)-(\d*)$/.exec(value.trim()) : null;
  if (!m) return undefined;
  return { start: Number(m[1]), ...(m[2] ? { end: Number(m[2]) + 1 } : {}) };
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

/** The start, end (exclusive) and total of a 206's Content-Range. */
export function parseContentRange(value: string | undefined): { start: number; end: number; total?: number } | undefined {
  const m = value ? CONTENT_RANGE.exec(value.trim()) : null;
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]) + 1, ...(m[3] !== "*" ? { total: Number(m[3]) } : {}) };
}

/** A size limit as set ("4 MiB", "64 KiB"). */
const limitText = (n: number) => (n % (1 << 20) === 0 ? `${n >> 20} MiB` : n % 1024 === 0 ? `${n >> 10} KiB` : `${n} bytes`);

/** Error answers are read whole for their message, up to this much. */
export const ERROR_BODY_LIMIT = 64 << 10;

/**
 * A small answer read whole (JSON, a manifest, a token, a header's bytes), at most `limit` bytes,
 * retried as one request: an answer cut half-way is asked again, a Range answer from the byte it
 * stopped at (the bytes already read are kept), any other answer whole. Answers that are not 2xx
 * (once the retries for 429/5xx are spent) are read up to 64 KiB, for the caller's error message.
 */
export async function httpReadAll(url: string, req: HttpRequest & { limit: number; what?: string }): Promise<HttpDocument> {
  const headers = { ...req.headers };
  const range = parseRangeHeader(headers.range ?? headers.Range);
  if (headers.Range !== undefined) {
    headers.range = headers.Range;
    delete headers.Range;
  }
  const parts: Buffer[] = [];
  let got = 0;
  /** The size of what is read, when known: the Range asked for, else the answer's Content-Length. */
  let total: number | undefined = range?.end !== undefined ? range.end - range.start : undefined;
  const what = req.what ?? displayUrl(url);
  const progress = () => (total !== undefined ? `${formatBytes(got)} of ${formatBytes(total)}` : got > 0 ? formatBytes(got) : undefined);
  return exchange(
    url,
    { ...req, headers },
    async (res) => {
      const ok = res.status >= 200 && res.status < 300;
      // Where this answer's body starts, and the part of it that is wanted.
      let bodyStart = 0;
      let from = 0;
      let to = Infinity;
      const declared = Number(header(res.headers, "content-length"));
      if (ok && range) {
        const cr = res.status === 206 ? parseContentRange(header(res.headers, "content-range")) : undefined;
        if (res.status === 206 && (!cr || cr.start !== range.start + got)) {
          discard(res.body);
          throw new CakeError("E_HTTP", `${what}: asked for ${headers.range}, got Content-Range ${header(res.headers, "content-range")}`);
        }
        bodyStart = cr ? cr.start : 0; // a 200 ignored the Range: its body starts at byte 0
        from = range.start + got;
        to = cr ? cr.end : (range.end ?? Infinity);
        if (Number.isFinite(to)) total = to - range.start;
      } else {
        parts.length = 0; // a whole answer again: what the last try read is dropped
        got = 0;
        total = Number.isFinite(declared) ? declared : undefined;
      }
      const limit = ok ? req.limit : ERROR_BODY_LIMIT;
      if (ok && !range && declared > limit) {
        discard(res.body);
        throw new CakeError("E_SIZE", `${what}: the answer is ${formatBytes(declared)}, more than the ${limitText(limit)} cake accepts; refused`);
      }
      const before = got;
      try {
        for await (const { data } of byteWindow(res.body, bodyStart, from, to)) {
          got += data.length;
          if (got > limit) {
            if (!ok) break; // the start of an error body is enough for its message
            throw new CakeError("E_SIZE", `${what}: more than the ${limitText(limit)} cake accepts; refused`);
          }
          parts.push(data);
        }
      } catch (err) {
        if (!isNetworkError(err)) throw err;
        if (range && ok) headers.range = `bytes=${range.start + got}-${range.end !== undefined ? range.end - 1 : ""}`;
        throw new CutAnswer(err, Boolean(range && ok && got > before));
      }
      if (range && ok && range.end !== undefined && to === range.end && range.start + got < to) {
        // The body ended early without an error (a proxy that closed it cleanly): ask for the rest.
        headers.range = `bytes=${range.start + got}-${range.end - 1}`;
        throw new CutAnswer(undefined, got > before, "the answer ended early");
      }
      return { status: res.status, headers: res.headers, url: res.url, tries: res.tries, bytes: Buffer.concat(parts) };
    },
    progress,
    req.timeouts?.documentMs ?? HTTP_TIMEOUTS.documentMs,
  );
}

/** Drops a response body without reading it (undici's destroy() reports an abort nobody wants). */
export function discard(body: Readable): void {
  body.on("error", () => undefined);
  body.destroy();
}

/** Reads up to `limit` bytes of a body and destroys the rest (an error body can be anything). */
export async function readUpTo(body: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    const b = chunk as Buffer;
    chunks.push(b.subarray(0, Math.max(0, limit - n)));
    n += b.length;
    if (n >= limit) {
      discard(body);
      break;
    }
  }
  return Buffer.concat(chunks);
}
