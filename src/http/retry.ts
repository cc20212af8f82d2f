/**
 * When and how long to wait before trying an HTTP request again: 408/429/5xx and dropped
 * connections, exponential backoff with jitter, and the server's Retry-After when it gives one.
 */
export const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);

const NETWORK_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_CLOSED",
  "ERR_STREAM_PREMATURE_CLOSE",
  "CAKE_HTTP_DEADLINE",
]);

/** A connection-level failure worth another try (as opposed to a bug or an abort). */
export function isNetworkError(err: unknown): boolean {
  for (let e = err as { code?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (typeof e.code === "string" && NETWORK_CODES.has(e.code)) return true;
    if (e === e.cause) break;
  }
  return false;
}

/** A failed request's message, with its cause's code when the message does not say it (undici's "fetch failed" does not). */
export function describeError(err: unknown): string {
  const e = err as { message?: string; code?: string; cause?: { message?: string; code?: string } };
  const msg = e?.message ?? String(err);
  const cause = e?.cause?.code ?? e?.cause?.message;
  return cause && !msg.includes(cause) ? `${msg} (${cause})` : msg;
}

export interface RetryPolicy {
  retries: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /**
   * The longest wait a server may ask for (Retry-After, or the reset of a `RateLimit` window) that
   * cake honours before the next try; a server asking for more fails the request at once, saying so.
   */
  maxServerWaitMs: number;
}

/**
 * Retries per request; CAKE_HTTP_RETRIES overrides (0 = fail at the first error, e.g. behind a proxy
 * that retries). CAKE_HTTP_MAX_WAIT (seconds, default 300): the longest rate-limit or Retry-After
 * wait honoured, as huggingface_hub waits out the Hub's window (its reset + 1 s).
 */
export const DEFAULT_RETRY: RetryPolicy = {
  retries: envInt("CAKE_HTTP_RETRIES", 6),
  baseDelayMs: 250,
  maxDelayMs: 20_000,
  maxServerWaitMs: envInt("CAKE_HTTP_MAX_WAIT", 300) * 1000,
};

export function envInt(name: string, dflt: number): number {
  const v = Number(process.env[name]);
  return process.env[name] !== undefined && Number.isInteger(v) && v >= 0 ? v : dflt;
}

/** What a server said about when to ask again: how long (ms) and why, from its answer's headers. */
export interface ServerWait {
  ms: number;
  /** e.g. `rate limit "api" (0 of 500 requests left in a 300 s window)` or `Retry-After: 30`. */
  reason: string;
}

type Headers = Record<string, string | string[] | undefined>;
const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);

/**
 * The wait a 429/503 asks for. The Hub sends the IETF draft's `RateLimit: "api";r=0;t=55` (and
 * `RateLimit-Policy: "fixed window";"api";q=500;w=300`) without Retry-After: when no request is left
 * (r=0), wait out the window's reset plus a second, as huggingface_hub does (utils/_http.py).
 * Otherwise `Retry-After` in seconds or as an HTTP date.
 */
export function serverWait(status: number, headers: Headers): ServerWait | undefined {
  const rl = first(headers["ratelimit"]);
  const m = rl ? /"(\w+)"\s*;\s*r\s*=\s*(\d+)\s*;\s*t\s*=\s*(\d+)/.exec(rl) : null;
  if (status === 429 && m && Number(m[2]) === 0) {
    const policy = /q\s*=\s*(\d+).*?w\s*=\s*(\d+)/.exec(first(headers["ratelimit-policy"]) ?? "");
    const window = policy ? ` (0 of ${policy[1]} requests left in a ${policy[2]} s window)` : "";
    return { ms: (Number(m[3]) + 1) * 1000, reason: `rate limit "${m[1]}"${window}, resets in ${m[3]} s` };
  }
  const ra = first(headers["retry-after"]);
  if (ra) {
    const secs = Number(ra);
    const ms = Number.isFinite(secs) ? secs * 1000 : Date.parse(ra) - Date.now();
    if (Number.isFinite(ms) && ms >= 0) return { ms, reason: `Retry-After: ${ra.trim()}` };
  }
  return undefined;
}

/** Milliseconds to wait before attempt `attempt` + 1 (1-based): exponential backoff with jitter. */
export function backoffDelay(attempt: number, policy: RetryPolicy): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return exp / 2 + Math.random() * (exp / 2);
}

/** Milliseconds to wait before attempt `attempt` (1-based), honouring a Retry-After header value. */
export function retryDelay(attempt: number, policy: RetryPolicy, retryAfter?: string | string[] | null): number {
  const wait = retryAfter ? serverWait(0, { "retry-after": retryAfter }) : undefined;
  return wait ? Math.min(wait.ms, policy.maxServerWaitMs) : backoffDelay(attempt, policy);
}

/**
 * Where a long wait is told (a rate limit, a server that asked for time): the CLI prints these lines
 * on stderr unless --quiet, the proxy logs them; silent by default (a library says nothing by itself).
 */
let waitNotice: ((line: string) => void) | undefined;
export function onRetryWait(sink: ((line: string) => void) | undefined): void {
  waitNotice = sink;
}
/** Waits shorter than this are the ordinary backoff between tries: not worth a line. */
const NOTICE_AFTER_MS = 2000;
export function noticeWait(what: string, ms: number, reason: string): void {
  if (ms >= NOTICE_AFTER_MS) waitNotice?.(`${what}: ${reason}; waiting ${Math.round(ms / 1000)} s before asking again`);
}
/**
 * Where a request tried again is told, once per request at its third try (about 0.75 s in): the CLI
 * says it on a terminal, where a Hub or registry that is down was otherwise 10-20 s of silence
 * before the error. Silent by default.
 */
let retryNotice: ((line: string) => void) | undefined;
export function onRetry(sink: ((line: string) => void) | undefined): void {
  retryNotice = sink;
}
export function noticeRetry(what: string, why: string, nextTry: number, tries: number): void {
  retryNotice?.(`${what}: ${why}; trying again (try ${nextTry} of ${tries})`);
}
/** Tells a wait of unknown length through the same sink (a store lease waiting for `cake gc`). */
export function noticeLine(line: string): void {
  waitNotice?.(line);
}

export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
