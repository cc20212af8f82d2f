/**
 * One HTTP request, done the way every cake client needs it: shared keep-alive pools, redirects
 * followed by hand so that Authorization never leaves the origin it was meant for (the Hub's 302 to
 * its CDN, a registry's 307 to S3), and 408/429/5xx/dropped connections retried with backoff.
 *
 * The caller owns the returned body and must consume it or `dump()` it.
 */
import type { Dispatcher } from "undici";
import { CakeError } from "../errors.js";
import { dispatchRequest, sharedDispatcher } from "./agent.js";
import { DEFAULT_RETRY, RETRYABLE_STATUS, isNetworkError, retryDelay, sleep, type RetryPolicy } from "./retry.js";

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
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData["body"];
  /** The URL that answered, after redirects. */
  url: string;
}

export const header = (h: HttpResponse["headers"], name: string): string | undefined => {
  const v = h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
};

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

export async function httpRequest(url: string, req: HttpRequest = {}): Promise<HttpResponse> {
  const policy = { ...DEFAULT_RETRY, ...req.retry };
  let method: HttpMethod = req.method ?? "GET";
  let headers = { ...req.headers };
  let target = new URL(url);
  const origin0 = target.origin;
  let body = req.body;
  let attempt = 0;
  let redirects = 0;
  for (;;) {
    attempt++;
    let res: Dispatcher.ResponseData;
    try {
      res = await dispatchRequest(req.dispatcher ?? (await sharedDispatcher()), target, {
        method,
        headers,
        body: typeof body === "function" ? body() : body,
        signal: req.signal,
      });
    } catch (err) {
      if (attempt <= policy.retries && isNetworkError(err) && !req.signal?.aborted) {
        await sleep(retryDelay(attempt, policy), req.signal);
        continue;
      }
      throw err;
    }
    const { statusCode: status } = res;
    if (REDIRECTS.has(status) && req.followRedirects !== false && res.headers.location) {
      await res.body.dump();
      if (++redirects > 10) throw new Error(`${url}: too many redirects`);
      const loc = Array.isArray(res.headers.location) ? res.headers.location[0]! : res.headers.location;
      target = new URL(loc, target);
      // Credentials are for the origin they were given for, never for a CDN or storage backend.
      if (target.origin !== origin0 && !req.sameParty?.(new URL(origin0), target)) {
        headers = Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== "authorization"));
      }
      if (status === 303) {
        method = method === "HEAD" ? "HEAD" : "GET";
        body = undefined;
      }
      attempt--; // a redirect is not a failure
      continue;
    }
    const replayable = body === undefined || typeof body !== "object" || Buffer.isBuffer(body);
    if (
      RETRYABLE_STATUS.has(status) &&
      !req.noRetryStatus?.includes(status) &&
      attempt <= policy.retries &&
      replayable
    ) {
      await res.body.dump();
      await sleep(retryDelay(attempt, policy, res.headers["retry-after"]), req.signal);
      continue;
    }
    return { status, headers: res.headers, body: res.body, url: target.toString() };
  }
}

/** Reads a small body as text, refusing more than `limit` bytes (a lying server cannot exhaust memory). */
export async function readLimited(body: AsyncIterable<Uint8Array> & { destroy(): unknown }, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    n += chunk.length;
    if (n > limit) {
      body.destroy();
      throw new CakeError("E_SIZE", `${what}: more than ${limit} bytes, refused`);
    }
    chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
  }
  return Buffer.concat(chunks);
}
