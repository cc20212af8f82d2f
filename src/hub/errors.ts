/**
 * Hub answers -> one-line errors, keyed on the `X-Error-Code` header the Hub sets
 * (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo), as huggingface_hub does.
 */
import { CakeError } from "../errors.js";
import { serverWait } from "../http/retry.js";
import { ERROR_BODY_LIMIT, header, readUpTo, type HttpDocument, type HttpResponse } from "../http/request.js";
import type { FoundToken } from "./token-files.js";

/** What to do about a token the Hub refused: a variable is set by the user, the token file by `hf auth login`. */
export function refusedToken(found: FoundToken): string {
  const why = found.refreshError ? `(${found.refreshError})` : "(expired or revoked)";
  const fix = found.source.startsWith("the token file") ? "run `hf auth login`" : `set a valid ${found.source}`;
  return `the Hub refused the token from ${found.source} ${why}; ${fix}`;
}

type TokenState = { accessToken?: string; found?: FoundToken };

/**
 * A Hub answer as an error: its HTTP status and the Hub's own `X-Error-Code` (RepoNotFound,
 * RevisionNotFound, EntryNotFound, GatedRepo), so callers match on those, never on the message.
 */
export class HubError extends CakeError {
  readonly hubCode?: string;
  constructor(code: ConstructorParameters<typeof CakeError>[0], message: string, status: number, hubCode: string | undefined) {
    super(code, message, { status });
    this.name = "HubError";
    if (hubCode) this.hubCode = hubCode;
  }
}

export async function hubError(res: HttpResponse, what: string, params: TokenState): Promise<CakeError> {
  const bytes = header(res.headers, "x-error-message") ? (await res.body.dump(), Buffer.alloc(0)) : await readUpTo(res.body, ERROR_BODY_LIMIT).catch(() => Buffer.alloc(0));
  return hubErrorOf({ ...res, bytes }, what, params);
}

/** The one-line error for a Hub answer already read (`httpReadAll`). */
export function hubErrorOf(res: HttpDocument, what: string, params: TokenState): CakeError {
  const code = header(res.headers, "x-error-code");
  let message = header(res.headers, "x-error-message");
  if (!message) {
    try {
      message = (JSON.parse(res.bytes.toString("utf8")) as { error?: string }).error;
    } catch {
      message = undefined;
    }
  }
  const refused = params.found?.refused ? params.found : undefined;
  const token = refused ? `; ${refusedToken(refused)}` : params.accessToken ? "" : " (no HF_TOKEN set)";
  switch (code) {
    case "GatedRepo":
      if (refused) return new HubError("E_GATED", `${what}: gated repository${token}`, res.status, code);
      return new HubError("E_GATED", `${what}: gated repository: ${res.status === 401 ? "log in with HF_TOKEN" : "your token has not been granted access"}; request access on the Hub${token}`, res.status, code);
    case "RepoNotFound":
      return new HubError("E_NOT_FOUND", `${what}: repository not found (or private and not yours)${token}`, res.status, code);
    case "RevisionNotFound":
      return new HubError("E_NOT_FOUND", `${what}: revision not found`, res.status, code);
    case "EntryNotFound":
      return new HubError("E_NOT_FOUND", `${what}: file not found in this revision`, res.status, code);
  }
  if (res.status === 401 || res.status === 403) {
    return new HubError("E_AUTH", `${what}: ${res.status === 401 ? "unauthorized" : "forbidden"}${message ? `: ${message}` : ""}${token}`, res.status, code);
  }
  // Only a path the Hub has no page for answers 404 without a code: a repository name that is no repository.
  if (res.status === 404) return new HubError("E_NOT_FOUND", `${what}: not found on the Hub: no such repository, or a private one that needs a token${token}`, res.status, code);
  const wait = res.status === 429 ? serverWait(429, res.headers) : undefined;
  const tries = res.tries > 1 ? ` (${res.tries} tries)` : "";
  if (wait) return new HubError("E_HTTP", `${what}: HTTP 429, the Hub's ${wait.reason}: more than CAKE_HTTP_MAX_WAIT allows; try again later${tries}`, res.status, code);
  return new HubError("E_HTTP", `${what}: HTTP ${res.status}${message ? `: ${message}` : ""}${tries}`, res.status, code);
}
