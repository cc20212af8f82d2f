/**
 * OCI distribution error answers (distribution-spec, "Error Codes"): `{"errors":[{code,message,detail}]}`
 * with the status each code goes with.
 */
import type { Response } from "express";
import { CakeError, isCakeError, isTransient } from "../src/index.js";

export type OciCode =
  | "NAME_UNKNOWN"
  | "MANIFEST_UNKNOWN"
  | "BLOB_UNKNOWN"
  | "UNAUTHORIZED"
  | "DENIED"
  | "TOOMANYREQUESTS"
  | "UNSUPPORTED"
  | "NAME_INVALID"
  | "MANIFEST_INVALID"
  | "DIGEST_INVALID"
  // distribution's registry/api/errcode: UNAVAILABLE (503) and UNKNOWN (500), beside the spec's codes
  | "UNAVAILABLE"
  | "UNKNOWN";

const STATUS: Record<OciCode, number> = {
  NAME_UNKNOWN: 404,
  MANIFEST_UNKNOWN: 404,
  BLOB_UNKNOWN: 404,
  UNAUTHORIZED: 401,
  DENIED: 403,
  TOOMANYREQUESTS: 429,
  UNSUPPORTED: 405,
  NAME_INVALID: 400,
  MANIFEST_INVALID: 400,
  DIGEST_INVALID: 400,
  UNAVAILABLE: 503,
  UNKNOWN: 500,
};

export class OciError extends Error {
  constructor(
    readonly code: OciCode,
    message: string,
    readonly status = STATUS[code],
    /** Seconds a client should wait before asking again (Retry-After), for 429 and 503. */
    readonly retryAfter?: number,
  ) {
    super(message);
  }
}

/** The challenge that makes docker/oras/crane/skopeo send their stored credentials (the HF token as password). */
export const CHALLENGE = 'Basic realm="cake proxy: log in with your Hugging Face token as the password"';

export function sendOciError(res: Response, err: OciError, head = false): void {
  let message = err.message;
  if (err.status === 401) {
    res.setHeader("WWW-Authenticate", CHALLENGE);
    // What an oras, docker or crane user runs: the host as the client named it, any user, the token as the password.
    message += ` (oras login ${res.req.headers.host ?? "HOST"} -u hf -p <token>; docker login the same)`;
  }
  if (err.retryAfter !== undefined) res.setHeader("Retry-After", String(err.retryAfter));
  res.status(err.status).type("application/json");
  if (head) res.end();
  else res.send(JSON.stringify({ errors: [{ code: err.code, message, detail: {} }] }));
}

/** How long a client is asked to wait before trying again after an upstream problem (s). */
const UPSTREAM_RETRY_AFTER = 5;

/**
 * A library error as the OCI error a client should see. An upstream problem another try may mend (the
 * Hub unreachable or cutting its answers after cake's own retries, a 5xx, a rate limit) is 503
 * UNAVAILABLE or 429 TOOMANYREQUESTS with Retry-After, which docker, oras and crane retry; anything
 * else unexpected is 500 UNKNOWN, never UNSUPPORTED (that says the operation itself is not offered).
 */
export function ociErrorOf(err: unknown, what: OciCode): OciError {
  if (err instanceof OciError) return err;
  if (isCakeError(err, "E_GATED") || isCakeError(err, "E_AUTH")) {
    // 401: who you are is missing or wrong; 403: you are known and not allowed.
    const e = err as CakeError;
    return e.status === 403 ? new OciError("DENIED", e.message) : new OciError("UNAUTHORIZED", e.message);
  }
  if (isCakeError(err, "E_NOT_FOUND")) return new OciError(what, (err as CakeError).message);
  if (isCakeError(err, "E_REF")) return new OciError("NAME_INVALID", (err as CakeError).message);
  if (isTransient(err)) {
    const e = err as CakeError;
    if (e.status === 429) return new OciError("TOOMANYREQUESTS", `the Hub is rate limiting: ${e.message}`, 429, UPSTREAM_RETRY_AFTER);
    return new OciError("UNAVAILABLE", `the Hub did not answer in full, try again: ${e.message}`, 503, UPSTREAM_RETRY_AFTER);
  }
  return new OciError("UNKNOWN", err instanceof Error ? err.message : String(err), 500);
}
