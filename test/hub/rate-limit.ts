/**
 * The headers of the Hub emulator's injected 429s. The Hub sends the IETF draft's `RateLimit` and
 * `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-09) and no `Retry-After`; its buckets are
 * "api" (the /api endpoints) and "resolvers" (anything that serves file bytes), over 5-minute windows
 * (https://huggingface.co/docs/hub/rate-limits; q is the anonymous tier). huggingface_hub 2.4.0 waits
 * `t + 1` seconds when `r=0` (utils/_http.py `parse_ratelimit_headers`), else falls back to `Retry-After`.
 */

export type RateLimitStyle = "retry-after" | "ratelimit";

const QUOTA = { api: 500, resolvers: 3000 };

/** `kind` is the server that answers; `path` the request's path. */
export function rateLimitHeaders(style: RateLimitStyle | undefined, seconds: number, kind: "hub" | "cdn" | "xet", path: string): Record<string, string> {
  if (style !== "ratelimit") return { "Retry-After": String(seconds) };
  const bucket = kind === "hub" && path.startsWith("/api/") && !path.startsWith("/api/resolve-cache/") ? "api" : "resolvers";
  return {
    RateLimit: `"${bucket}";r=0;t=${seconds}`,
    "RateLimit-Policy": `"fixed window";"${bucket}";q=${QUOTA[bucket]};w=300`,
  };
}
