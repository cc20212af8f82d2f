/**
 * Where the Hub is and who we are to it, the way huggingface_hub 2.4 decides (constants.py,
 * utils/_auth.py): HF_ENDPOINT (default https://huggingface.co); the token from HF_TOKEN (else
 * HUGGING_FACE_HUB_TOKEN), else the token file ($HF_TOKEN_PATH, default $HF_HOME/token), cleaned of
 * newlines and surrounding spaces, an empty one being none; none sent at all under
 * HF_HUB_DISABLE_IMPLICIT_TOKEN (cake has no way to give one explicitly); HF_HUB_OFFLINE (or
 * TRANSFORMERS_OFFLINE): never ask the Hub, what the store holds is used.
 */
import os from "node:os";
import path from "node:path";
import { envPath } from "../paths-env.js";
import { addStoredRefresh, cleanToken, readTokenFile, type FoundToken } from "./token-files.js";

export { cleanToken, type FoundToken } from "./token-files.js";

export interface HubParams {
  hubUrl: string;
  /** The token given (proxy clients, tests); with `found`, its value when found (what goes out: `tokenToSend`). */
  accessToken?: string;
  signal?: AbortSignal;
  /** HF_HUB_OFFLINE: no request goes to the Hub (each fails with E_OFFLINE before it is sent). */
  offline?: boolean;
  /**
   * The token when cake found it itself (environment or token file) rather than being given it: it
   * may be refreshed before use (a browser login's), and once the Hub refuses it the run goes on
   * anonymously. Shared by every copy of these params.
   */
  found?: FoundToken;
  /** Other origins that are the Hub too (tests' alias host); huggingface.co and hf.co need none, see `isHubOrigin`. */
  hubAliases?: string[];
}

/** The Hub's two public names: a redirect between them stays on the Hub (token kept), any other host is a CDN. */
const HUB_NAMES = new Set(["https://huggingface.co", "https://hf.co"]);

/** Whether `url` is served by the Hub that `params.hubUrl` names (not by its CDN). */
export function isHubOrigin(params: Pick<HubParams, "hubUrl" | "hubAliases">, url: string | URL): boolean {
  const home = new URL(params.hubUrl).origin;
  const there = new URL(url).origin;
  return there === home || (HUB_NAMES.has(home) && HUB_NAMES.has(there)) || (params.hubAliases ?? []).some((a) => new URL(a).origin === there);
}

/** huggingface_hub's `_is_true`: 1, ON, YES, TRUE in any case. */
export const envTrue = (v: string | undefined): boolean => ["1", "ON", "YES", "TRUE"].includes((v ?? "").toUpperCase());

export function hfHome(): string {
  return envPath("HF_HOME") ?? path.join(envPath("XDG_CACHE_HOME") ?? path.join(os.homedir(), ".cache"), "huggingface");
}

/** huggingface_hub's cache of repos: HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub. */
export function hfHubCache(): string {
  return envPath("HF_HUB_CACHE") ?? envPath("HUGGINGFACE_HUB_CACHE") ?? path.join(hfHome(), "hub");
}

/** The token file `hf auth login` writes: $HF_TOKEN_PATH, else $HF_HOME/token. */
export function hfTokenPath(): string {
  return envPath("HF_TOKEN_PATH") ?? path.join(hfHome(), "token");
}

/** HF_TOKEN, else HUGGING_FACE_HUB_TOKEN (the first one set and not empty, as huggingface_hub picks), cleaned. */
export function tokenFromEnv(): { token: string; source: string } | undefined {
  const source = process.env.HF_TOKEN ? "HF_TOKEN" : process.env.HUGGING_FACE_HUB_TOKEN ? "HUGGING_FACE_HUB_TOKEN" : undefined;
  const token = source ? cleanToken(process.env[source]) : undefined;
  return source && token ? { token, source } : undefined;
}

export function hubParamsFromEnv(): HubParams {
  const hubUrl = (process.env.HF_ENDPOINT || "https://huggingface.co").replace(/\/+$/, "");
  // huggingface_hub: `HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE`: the first one set and not empty decides.
  const offline = envTrue(process.env.HF_HUB_OFFLINE || process.env.TRANSFORMERS_OFFLINE);
  let found: FoundToken | undefined;
  // Checked before the token is read, as huggingface_hub does: no refresh for a token that is not sent.
  if (!envTrue(process.env.HF_HUB_DISABLE_IMPLICIT_TOKEN)) {
    const env = tokenFromEnv();
    if (env) found = { token: env.token, source: env.source };
    else {
      const file = hfTokenPath();
      const token = readTokenFile(file);
      if (token) found = addStoredRefresh({ token, source: `the token file ${file}` }, hubUrl, file);
    }
  }
  return { hubUrl, ...(found ? { accessToken: found.token, found } : {}), ...(offline ? { offline } : {}) };
}
