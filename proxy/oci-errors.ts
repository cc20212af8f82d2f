/**
 * OCI distribution error answers (distribution-spec, "Error Codes"): `{"errors":[{code,message,detail}]}`
 * with the status each code goes with.
 */
import type { Response } from "express";
import { CakeError, isCakeError } from "../src/index.js";

export type OciCode = "NAME_UNKNOWN" | "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN" | "UNAUTHORIZED" | "DENIED" | "TOOMANYREQUESTS" | "UNSUPPORTED" | "NAME_INVALID" | "MANIFEST_INVALID" | "DIGEST_INVALID";

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
};

export class OciError extends Error {
  constructor(
    readonly code: OciCode,
    message: string,
    readonly status = STATUS[code],
  ) {
    super(message);
  }
}

/** The challenge that makes docker/oras/crane/skopeo send their stored credentials (the HF token as password). */
export const CHALLENGE = 'Basic realm="cake proxy: log in with your Hugging Face token as the password"';

export function sendOciError(res: Response, err: OciError, head = false): void {
  if (err.status === 401) res.setHeader("WWW-Authenticate", CHALLENGE);
  res.status(err.status).type("application/json");
  if (head) res.end();
  else res.send(JSON.stringify({ errors: [{ code: err.code, message: err.message, detail: {} }] }));
}

/** A library error as the OCI error a client should see. */
export function ociErrorOf(err: unknown, what: OciCode): OciError {
  if (err instanceof OciError) return err;
  if (isCakeError(err, "E_GATED") || isCakeError(err, "E_AUTH")) {
    const e = err as CakeError;
    return /not been granted|forbidden/.test(e.message) ? new OciError("DENIED", e.message) : new OciError("UNAUTHORIZED", e.message);
  }
  if (isCakeError(err, "E_NOT_FOUND")) return new OciError(what, (err as CakeError).message);
  if (isCakeError(err, "E_REF")) return new OciError("NAME_INVALID", (err as CakeError).message);
  if ((err as { statusCode?: number })?.statusCode === 429) return new OciError("TOOMANYREQUESTS", "the Hub is rate limiting; retry later");
  return new OciError("UNSUPPORTED", err instanceof Error ? err.message : String(err), 502);
}
