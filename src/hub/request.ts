/** A request to the Hub with the token attached and Hub errors turned into CakeErrors. */
import { CakeError, isCakeError } from "../errors.js";
import { displayUrl, header, httpReadAll, httpRequest, type HttpDocument, type HttpRequest, type HttpResponse } from "../http/request.js";
import { describeError, isNetworkError } from "../http/retry.js";
import { isHubOrigin, type HubParams } from "./config.js";
import { hubError, hubErrorOf, refusedToken } from "./errors.js";

export const USER_AGENT = "cake/0.1 (+https://github.com/cake)";

/** The token a request carries: the one cake found (refreshed; none once the Hub refused it), else the one given. */
export function tokenToSend(params: HubParams): string | undefined {
  return params.found ? (params.found.refused ? undefined : params.found.token) : params.accessToken;
}

export function hubHeaders(params: HubParams, extra: Record<string, string> = {}): Record<string, string> {
  const token = tokenToSend(params);
  return {
    "user-agent": USER_AGENT,
    ...(token ? { authorization: `Bearer ${token}` } : {}),
    ...extra,
  };
}

/**
 * A 401 that refuses the token itself (expired, revoked: "Invalid credentials in Authorization
 * header"), not one that says what the repo needs (GatedRepo, RepoNotFound, ...).
 */
const refusesToken = (res: { status: number; headers: HttpResponse["headers"] }) =>
  res.status === 401 && (!header(res.headers, "x-error-code") || header(res.headers, "x-error-message") === "Invalid credentials in Authorization header");

const answered = (res: { status: number }, req: HttpRequest) =>
  (res.status >= 200 && res.status < 300) || (req.followRedirects === false && res.status >= 300 && res.status < 400);

/**
 * One request to the Hub, however its answer is read (`send`): offline refused before it is sent,
 * the token refreshed where the login allows it, a token cake found itself and the Hub refused (a
 * browser login's expires after 30 days) dropped once, said once, and a network failure after the
 * retries turned into one line naming `what`.
 */
async function toHub<T extends { status: number; headers: HttpResponse["headers"] }>(
  params: HubParams,
  what: string,
  req: HttpRequest,
  send: (r: HttpRequest) => Promise<T>,
  drop: (res: T) => Promise<unknown>,
): Promise<T> {
  if (params.offline) throw offlineError(what);
  const found = params.found;
  await found?.refresh?.();
  const sent = tokenToSend(params);
  // The Hub may redirect between its own names (hf.co, huggingface.co): the token goes along.
  const sameParty = (from: URL, to: URL) => isHubOrigin(params, from) && isHubOrigin(params, to);
  const once = async () => {
    try {
      return await send({ ...req, signal: params.signal, headers: hubHeaders(params, req.headers), sameParty });
    } catch (err) {
      throw unreachable(params, what, err);
    }
  };
  let res = await once();
  if (found && sent && refusesToken(res)) {
    // What is public is read without the refused token, once said; what is not fails saying why (hubError).
    await drop(res);
    found.refused = true;
    res = await once();
    if (answered(res, req)) {
      const onRefused = found.onRefused;
      found.onRefused = undefined; // said once per run, whichever request met the refusal first
      onRefused?.(`${refusedToken(found)}; going on anonymously`);
    }
  }
  return res;
}

/**
 * Sends a request; any status but 2xx (and 3xx when not following) becomes a thrown CakeError naming
 * `what`, and so does a Hub that cannot be reached (E_NETWORK, after the retries) or may not be
 * asked (E_OFFLINE): callers that have a local copy fall back to it on those two.
 */
export async function hubRequest(params: HubParams, url: string, what: string, req: HttpRequest = {}): Promise<HttpResponse> {
  const res = await toHub(params, what, req, (r) => httpRequest(url, r), (r) => r.body.dump());
  if (!answered(res, req)) throw await hubError(res, what, params);
  return res;
}

/**
 * A JSON answer of the Hub (model info, a tree page, refs, search), read whole: an answer cut
 * half-way is asked again whole (src/http `httpReadAll`), like every other request.
 */
export async function hubJson<T>(params: HubParams, url: string, what: string): Promise<{ value: T; res: HttpDocument }> {
  const res = await toHub(params, what, {}, (r) => httpReadAll(url, { ...r, limit: JSON_LIMIT, what }), async () => {});
  if (!answered(res, {})) throw hubErrorOf(res, what, params);
  try {
    return { value: JSON.parse(res.bytes.toString("utf8")) as T, res };
  } catch {
    throw new CakeError("E_HTTP", `${what}: the Hub's answer to ${displayUrl(res.url)} is not JSON (${res.bytes.length} bytes)`);
  }
}

/** A listing of a 70B model's tree is a few MB; nothing the Hub sends as JSON comes near this. */
const JSON_LIMIT = 256 << 20;

const offlineError = (what: string) => new CakeError("E_OFFLINE", `${what}: HF_HUB_OFFLINE is set, the Hub is not asked`);

/** Connection-level codes: the Hub was never reached (as opposed to an answer cut half-way). */
const CONNECT_CODES = /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|UND_ERR_CONNECT_TIMEOUT)$/;

/**
 * A request that failed on the network after its retries, as one line naming `what`: "cannot reach
 * the Hub" when no connection could be made (callers with a local copy fall back to it on
 * E_NETWORK), else what happened to which URL and how many tries.
 */
export function unreachable(params: HubParams, what: string, err: unknown): unknown {
  if (!isCakeError(err, "E_NETWORK") && !isNetworkError(err)) return err;
  let code: string | undefined;
  for (let e = err as { code?: string; cause?: unknown } | undefined, i = 0; e && i < 8; e = e.cause as typeof e, i++) {
    if (typeof e.code === "string" && CONNECT_CODES.test(e.code)) code = e.code;
  }
  if (code) {
    const tries = / \(\d+ tries\)$/.exec((err as Error).message)?.[0] ?? "";
    const cause = (err as { cause?: unknown }).cause ?? err;
    return new CakeError("E_NETWORK", `${what}: cannot reach the Hub at ${params.hubUrl}: ${describeError(cause)}${tries}`, { cause: err });
  }
  return new CakeError("E_NETWORK", `${what}: ${isCakeError(err) ? err.message : describeError(err)}`, { cause: err });
}

export const encodeRepo = (repo: string) => repo.split("/").map(encodeURIComponent).join("/");
export const encodePath = (p: string) => p.split("/").map(encodeURIComponent).join("/");
