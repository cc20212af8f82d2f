/**
 * Registry errors: the OCI error body `{"errors":[{"code","message","detail"}]}`
 * (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes), read from a
 * size-limited body and turned into one CakeError line naming what was asked, where, and what the
 * registry said. Callers match on `code`; `errors` keeps the registry's own codes.
 */
import { STATUS_CODES } from "node:http";
import { CakeError, type ErrorCode } from "../errors.js";
import { ERROR_BODY_LIMIT, discard, readUpTo, type HttpResponse } from "../http/request.js";

export interface OciErrorEntry {
  code: string;
  message?: string;
  detail?: unknown;
}

/** A failed registry request: method, URL and status, plus the registry's error entries. */
export class RegistryError extends CakeError {
  readonly method: string;
  readonly url: string;
  readonly status: number;
  readonly errors: OciErrorEntry[];
  constructor(
    code: ErrorCode,
    message: string,
    info: { method: string; url: string; status: number; errors: OciErrorEntry[] },
  ) {
    super(code, message);
    this.name = "RegistryError";
    this.method = info.method;
    this.url = info.url;
    this.status = info.status;
    this.errors = info.errors;
  }
}

/** Error bodies are read up to this many bytes; the rest is discarded. */
export { ERROR_BODY_LIMIT };

/** The `errors` array of an OCI error body, or [] when the body is not one. */
export function parseOciErrors(body: Buffer | string): OciErrorEntry[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof body === "string" ? body : body.toString("utf8"));
  } catch {
    return [];
  }
  const list = (parsed as { errors?: unknown } | null)?.errors;
  if (!Array.isArray(list)) return [];
  const out: OciErrorEntry[] = [];
  for (const e of list) {
    if (e === null || typeof e !== "object" || typeof (e as { code?: unknown }).code !== "string") continue;
    const { code, message, detail } = e as { code: string; message?: unknown; detail?: unknown };
    const entry: OciErrorEntry = { code: clip(code, 64) };
    if (typeof message === "string") entry.message = message;
    if (detail !== undefined) entry.detail = detail;
    out.push(entry);
  }
  return out;
}

/** The stable cake code for a registry answer. */
export function errorCodeFor(status: number, errors: OciErrorEntry[]): ErrorCode {
  const codes = errors.map((e) => e.code);
  if (status === 401 || status === 403 || codes.some((c) => c === "UNAUTHORIZED" || c === "DENIED")) return "E_AUTH";
  if (codes.includes("DIGEST_INVALID")) return "E_DIGEST";
  if (codes.includes("SIZE_INVALID")) return "E_SIZE";
  if (status === 404 || codes.some((c) => c.endsWith("_UNKNOWN"))) return "E_NOT_FOUND";
  return errors.length > 0 ? "E_REGISTRY" : "E_HTTP";
}

/** `host/path` without the query: upload URLs carry opaque state, token URLs carry scopes. */
export function urlish(url: string): string {
  try {
    const u = new URL(url);
    return `${u.host}${u.pathname}`;
  } catch {
    return clip(url.split("?")[0] ?? url, 200);
  }
}

/**
 * Builds the error for a failed response, reading at most ERROR_BODY_LIMIT bytes of its body (and
 * discarding the rest). `context` names what was asked for, e.g. `localhost:5000/models/x:v1`.
 */
export async function registryError(
  res: HttpResponse,
  method: string,
  url: string,
  context: string,
  hint?: string,
): Promise<RegistryError> {
  let body: Buffer = Buffer.alloc(0);
  if (method !== "HEAD") {
    try {
      body = await readUpTo(res.body, ERROR_BODY_LIMIT);
    } catch {
      // a body that breaks off says nothing more than the status
    }
  } else {
    discard(res.body);
  }
  return errorFromBody(res.status, body, method, url, context, hint);
}

/** The same, from a status and body already in hand. */
export function errorFromBody(
  status: number,
  body: Buffer,
  method: string,
  url: string,
  context: string,
  hint?: string,
): RegistryError {
  const errors = parseOciErrors(body);
  let said: string;
  if (errors.length > 0) {
    said = errors
      .map((e) => {
        let s = e.code;
        if (e.message) s += `: ${e.message}`;
        const d = detailText(e.detail);
        if (d) s += ` (${d})`;
        return s;
      })
      .join("; ");
  } else {
    const text = body.toString("utf8").replace(/<[^>]*>/g, " ");
    said = clip(text.replace(/\s+/g, " ").trim(), 200) || STATUS_CODES[status] || "no error details";
  }
  const code = errorCodeFor(status, errors);
  const message = `${context}: ${method} ${urlish(url)} returned ${status} ${said}${hint ? ` (${hint})` : ""}`;
  return new RegistryError(code, oneLine(message), { method, url, status, errors });
}

function detailText(detail: unknown): string {
  if (detail === undefined || detail === null) return "";
  const s = typeof detail === "string" ? detail : JSON.stringify(detail);
  return s === "{}" || s === "[]" ? "" : clip(s, 200);
}

const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n)}…` : s);
const oneLine = (s: string) => s.replace(/[\r\n\t]+/g, " ");

export { discard };
