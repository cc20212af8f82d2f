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
}

/** Retries per request; CAKE_HTTP_RETRIES overrides (0 = fail at the first error, e.g. behind a proxy that retries). */
export const DEFAULT_RETRY: RetryPolicy = {
  retries: envInt("CAKE_HTTP_RETRIES", 6),
  baseDelayMs: 250,
  maxDelayMs: 20_000,
};

function envInt(name: string, dflt: number): number {
  const v = Number(process.env[name]);
  return process.env[name] !== undefined && Number.isInteger(v) && v >= 0 ? v : dflt;
}

/** Milliseconds to wait before attempt `attempt` (1-based), honouring a Retry-After header value. */
export function retryDelay(attempt: number, policy: RetryPolicy, retryAfter?: string | string[] | null): number {
  const ra = Array.isArray(retryAfter) ? retryAfter[0] : retryAfter;
  if (ra) {
    const secs = Number(ra);
    const ms = Number.isFinite(secs) ? secs * 1000 : Date.parse(ra) - Date.now();
    if (Number.isFinite(ms) && ms >= 0) return Math.min(ms, 60_000);
  }
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return exp / 2 + Math.random() * (exp / 2);
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
