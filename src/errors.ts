/**
 * CakeError: every failure a user can see. `code` is stable (callers and tests match on it),
 * `message` is the one line the CLI prints, `cause` keeps the original error.
 */
export type ErrorCode =
  | "E_SAFETENSORS" // hostile or malformed safetensors file
  | "E_RECIPE" // malformed or hostile recipe / artifact
  | "E_PATH" // a path that would escape its directory
  | "E_DIGEST" // bytes do not hash to the digest they claim
  | "E_SIZE" // bytes are not the size they claim
  | "E_REF" // a reference cannot be parsed
  | "E_NOT_FOUND" // not in the store / on the remote
  | "E_AUTH" // 401/403
  | "E_GATED" // Hub gated repo
  | "E_HTTP" // other HTTP failure
  | "E_NETWORK" // connection failure after retries
  | "E_OFFLINE" // HF_HUB_OFFLINE is set: the Hub may not be asked
  | "E_REGISTRY" // OCI distribution error
  | "E_LOCK" // store busy
  | "E_USAGE" // bad command-line usage
  | "E_IO"; // filesystem

export class CakeError extends Error {
  readonly code: ErrorCode;
  /** The HTTP status of the answer this error reports, when it reports one (a Hub or registry answer). */
  readonly status?: number;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "CakeError";
    this.code = code;
    if (options?.status !== undefined) this.status = options.status;
  }
}

/**
 * A failure that another try later may mend: the network (after cake's own retries), a rate limit,
 * a server error. The proxy answers these 503/429 so that clients retry, never as a refusal.
 */
export function isTransient(err: unknown): boolean {
  if (!(err instanceof CakeError)) return false;
  if (err.code === "E_NETWORK") return true;
  return err.status !== undefined && (err.status === 408 || err.status === 429 || err.status >= 500);
}

export function isCakeError(err: unknown, code?: ErrorCode): err is CakeError {
  return err instanceof CakeError && (code === undefined || err.code === code);
}

/** One line, whatever was thrown: what the CLI prints after `cake: `. */
export function oneLine(err: unknown): string {
  if (err instanceof CakeError) return err.message.replace(/\s*\n\s*/g, " ");
  const e = err as { code?: string; path?: string; message?: string };
  if (e && e.code === "ENOSPC") return `no space left on device${e.path ? ` writing ${e.path}` : ""}`;
  if (e && typeof e.message === "string") return e.message.replace(/\s*\n\s*/g, " ");
  return String(err);
}
