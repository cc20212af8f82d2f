/** A request to the Hub with the token attached and Hub errors turned into CakeErrors. */
import { CakeError } from "../errors.js";
import { header, httpRequest, readLimited, type HttpRequest, type HttpResponse } from "../http/request.js";
import { describeError, isNetworkError } from "../http/retry.js";
import { isHubOrigin, type HubParams } from "./config.js";
import { hubError, refusedToken } from "./errors.js";

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
const refusesToken = (res: HttpResponse) =>
  res.status === 401 && (!header(res.headers, "x-error-code") || header(res.headers, "x-error-message") === "Invalid credentials in Authorization header");

/**
 * Sends a request; any status but 2xx (and 3xx when not following) becomes a thrown CakeError naming
 * `what`, and so does a Hub that cannot be reached (E_NETWORK, after the retries) or may not be
 * asked (E_OFFLINE): callers that have a local copy fall back to it on those two.
 */
export async function hubRequest(params: HubParams, url: string, what: string, req: HttpRequest = {}): Promise<HttpResponse> {
  if (params.offline) throw new CakeError("E_OFFLINE", `${what}: HF_HUB_OFFLINE is set, the Hub is not asked`);
  const found = params.found;
  await found?.refresh?.();
  const sent = tokenToSend(params);
  let res = await sendToHub(params, url, what, req);
  if (found && sent && refusesToken(res)) {
    // A token cake found itself and the Hub refused (a browser login's expires after 30 days): what
    // is public is read without it, once said; what is not fails saying why (hubError).
    await res.body.dump();
    found.refused = true;
    res = await sendToHub(params, url, what, req);
    if (answered(res, req)) {
      const onRefused = found.onRefused;
      found.onRefused = undefined; // said once per run, whichever request met the refusal first
      onRefused?.(`${refusedToken(found)}; going on anonymously`);
    }
  }
  if (!answered(res, req)) throw await hubError(res, what, params);
  return res;
}

const answered = (res: HttpResponse, req: HttpRequest) =>
  (res.status >= 200 && res.status < 300) || (req.followRedirects === false && res.status >= 300 && res.status < 400);

async function sendToHub(params: HubParams, url: string, what: string, req: HttpRequest): Promise<HttpResponse> {
  try {
    // The Hub may redirect between its own names (hf.co, huggingface.co): the token goes along.
    const sameParty = (from: URL, to: URL) => isHubOrigin(params, from) && isHubOrigin(params, to);
    return await httpRequest(url, { ...req, signal: params.signal, headers: hubHeaders(params, req.headers), sameParty });
  } catch (err) {
    if (!isNetworkError(err)) throw err;
    throw new CakeError("E_NETWORK", `${what}: cannot reach the Hub at ${params.hubUrl}: ${describeError(err)}`, { cause: err });
  }
}

export async function hubJson<T>(params: HubParams, url: string, what: string): Promise<{ value: T; res: HttpResponse }> {
  const res = await hubRequest(params, url, what);
  const body = await readLimited(res.body, 256 << 20, what);
  return { value: JSON.parse(body.toString("utf8")) as T, res };
}

export const encodeRepo = (repo: string) => repo.split("/").map(encodeURIComponent).join("/");
export const encodePath = (p: string) => p.split("/").map(encodeURIComponent).join("/");
