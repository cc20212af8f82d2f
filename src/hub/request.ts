/** A request to the Hub with the token attached and Hub errors turned into CakeErrors. */
import { CakeError } from "../errors.js";
import { httpRequest, readLimited, type HttpRequest, type HttpResponse } from "../http/request.js";
import { describeError, isNetworkError } from "../http/retry.js";
import type { HubParams } from "./config.js";
import { hubError } from "./errors.js";

export const USER_AGENT = "cake/0.1 (+https://github.com/cake)";

export function hubHeaders(params: HubParams, extra: Record<string, string> = {}): Record<string, string> {
  return {
    "user-agent": USER_AGENT,
    ...(params.accessToken ? { authorization: `Bearer ${params.accessToken}` } : {}),
    ...extra,
  };
}

/**
 * Sends a request; any status but 2xx (and 3xx when not following) becomes a thrown CakeError naming
 * `what`, and so does a Hub that cannot be reached (E_NETWORK, after the retries) or may not be
 * asked (E_OFFLINE): callers that have a local copy fall back to it on those two.
 */
export async function hubRequest(params: HubParams, url: string, what: string, req: HttpRequest = {}): Promise<HttpResponse> {
  if (params.offline) throw new CakeError("E_OFFLINE", `${what}: HF_HUB_OFFLINE is set, the Hub is not asked`);
  let res: HttpResponse;
  try {
    res = await httpRequest(url, { ...req, signal: params.signal, headers: hubHeaders(params, req.headers) });
  } catch (err) {
    if (!isNetworkError(err)) throw err;
    throw new CakeError("E_NETWORK", `${what}: cannot reach the Hub at ${params.hubUrl}: ${describeError(err)}`, { cause: err });
  }
  const okRedirect = req.followRedirects === false && res.status >= 300 && res.status < 400;
  if ((res.status < 200 || res.status >= 300) && !okRedirect) throw await hubError(res, what, params);
  return res;
}

export async function hubJson<T>(params: HubParams, url: string, what: string): Promise<{ value: T; res: HttpResponse }> {
  const res = await hubRequest(params, url, what);
  const body = await readLimited(res.body, 256 << 20, what);
  return { value: JSON.parse(body.toString("utf8")) as T, res };
}

export const encodeRepo = (repo: string) => repo.split("/").map(encodeURIComponent).join("/");
export const encodePath = (p: string) => p.split("/").map(encodeURIComponent).join("/");
