/**
 * The token files huggingface_hub reads and writes. The token file: its token cleaned as
 * `_clean_token` does. Browser logins' tokens, kept fresh as huggingface_hub 2.4 does (utils/_auth.py
 * `_refresh_oauth_token_if_needed`, utils/_oauth_device.py `refresh_access_token`). `hf auth login`
 * in a browser saves, in `stored_tokens` beside the token file (an INI file, one section per token
 * name), `hf_token`, `refresh_token` and `expires_at` (unix seconds; such tokens live 30 days).
 * When the token file's token is one of them and has less than a day left, its refresh token is
 * exchanged once (`POST {endpoint}/oauth/token`, form: grant_type=refresh_token, refresh_token,
 * client_id) and the answer is saved to both files, exactly where and how huggingface_hub saves it.
 */
import fs from "node:fs";
import path from "node:path";
import { CakeError } from "../errors.js";
import { httpReadAll } from "../http/request.js";

/** A token cake found itself (not one a caller gave), and what became of it during this run. */
export interface FoundToken {
  token: string;
  /** Where it came from, for messages: "HF_TOKEN", or "the token file <path>". */
  source: string;
  /** Set once the Hub refused it (401): every later request goes anonymously. */
  refused?: boolean;
  /** Told once, when the Hub refused it and a request went on anonymously (the CLI prints it). */
  onRefused?: (line: string) => void;
  /** A browser login's token close to expiry: refreshes it (once; later calls wait for the same). */
  refresh?: () => Promise<void>;
  /** Why the refresh failed, said when the Hub then refuses the token. */
  refreshError?: string;
}

/** huggingface_hub's `_clean_token`: every CR and LF removed, then surrounding white space (Python's); empty is none. */
export function cleanToken(token: string | undefined): string | undefined {
  if (token === undefined) return undefined;
  const ws = "[\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
  return token.replace(/[\r\n]/g, "").replace(new RegExp(`^${ws}+|${ws}+$`, "g"), "") || undefined;
}

/** The token file's token, cleaned; none when there is no file (any other failure to read it is said). */
export function readTokenFile(file: string): string | undefined {
  try {
    return cleanToken(fs.readFileSync(file, "utf8"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CakeError("E_IO", `${file}: cannot read the Hugging Face token file: ${(err as Error).message}; fix it or set HF_TOKEN_PATH`, { cause: err });
  }
}

const REFRESH_MARGIN_S = 24 * 3600; // huggingface_hub's _OAUTH_REFRESH_MARGIN
const CLIENT_ID = "26be6b09-91c5-47da-9861-d2d2bb7a7e36"; // huggingface_hub's DEVICE_CODE_OAUTH_CLIENT_ID

type Sections = Map<string, Map<string, string>>;

/** The INI file as Python's configparser reads it (keys lower case, `=` or `:`, `#`/`;` comments); {} when absent or unreadable. */
export function readStoredTokens(file: string): Sections {
  const sections: Sections = new Map();
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return sections;
  }
  let cur: Map<string, string> | undefined;
  for (const line of text.split(/\r?\n/)) {
    const t = line.trim();
    if (!t || t.startsWith("#") || t.startsWith(";")) continue;
    const head = /^\[(.+)\]$/.exec(t);
    if (head) sections.set(head[1]!, (cur = new Map()));
    else if (cur) {
      const at = t.search(/[=:]/);
      if (at > 0) cur.set(t.slice(0, at).trim().toLowerCase(), t.slice(at + 1).trim());
    }
  }
  return sections;
}

/** Writes a secret owner-only, as huggingface_hub's `_write_secret` does (file 0600, its folder 0700). */
function writeSecret(file: string, content: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, content, { mode: 0o600 });
  fs.chmodSync(file, 0o600);
  fs.chmodSync(path.dirname(file), 0o700); // huggingface_hub restricts the folder too
}

/** Writes sections as configparser does: sorted names, `key = value`, a blank line after each. */
function writeStoredTokens(file: string, sections: Sections): void {
  const names = [...sections.keys()].sort();
  writeSecret(file, names.map((n) => `[${n}]\n${[...sections.get(n)!].map(([k, v]) => `${k} = ${v}\n`).join("")}\n`).join(""));
}

const expiresAt = (fields: Map<string, string> | undefined): number | undefined => {
  const v = fields?.get("expires_at");
  return v !== undefined && /^\s*[+-]?\d+\s*$/.test(v) ? Number(v) : undefined;
};

/**
 * Gives `found` (the token file's token) its `refresh` when it is a browser login's with less than a
 * day left and a refresh token; any other token is left as is.
 */
export function addStoredRefresh(found: FoundToken, hubUrl: string, tokenFile: string): FoundToken {
  const storedFile = path.join(path.dirname(tokenFile), "stored_tokens");
  const token = found.token;
  const entry = [...readStoredTokens(storedFile)].find(([, f]) => f.get("hf_token") === token);
  const refreshToken = entry?.[1].get("refresh_token");
  const expires = expiresAt(entry?.[1]);
  if (!entry || !refreshToken || expires === undefined || expires - REFRESH_MARGIN_S > Date.now() / 1000) return found;
  let once: Promise<void> | undefined;
  found.refresh = () =>
    (once ??= refreshStored(hubUrl, tokenFile, storedFile, entry[0], token, refreshToken).then(
      (fresh) => void (found.token = fresh),
      // Best effort, as huggingface_hub: the old token is sent; if the Hub refuses it, this says why.
      (err: unknown) => void (found.refreshError = (err as Error).message),
    ));
  return found;
}

async function refreshStored(hubUrl: string, tokenFile: string, storedFile: string, name: string, token: string, refreshToken: string): Promise<string> {
  // Another process may have refreshed it meanwhile: adopt its result.
  const now = readStoredTokens(storedFile).get(name);
  if (now?.get("hf_token") && now.get("hf_token") !== token) return now.get("hf_token")!;
  const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: refreshToken, client_id: process.env.HF_DEVICE_CODE_OAUTH_CLIENT_ID ?? CLIENT_ID });
  // Read whole in the one retry loop: a cut answer is asked again, like every other request.
  const res = await httpReadAll(`${hubUrl}/oauth/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: form.toString(),
    limit: 1 << 20,
    what: `${hubUrl}/oauth/token`,
  });
  const text = res.bytes.toString("utf8");
  let data: { access_token?: string; refresh_token?: string; expires_in?: number; error?: string; error_description?: string };
  try {
    data = JSON.parse(text) as typeof data;
  } catch {
    throw new CakeError("E_AUTH", `the Hub's /oauth/token answered HTTP ${res.status} without JSON`);
  }
  if (typeof data.access_token !== "string" || !data.access_token) {
    throw new CakeError("E_AUTH", `refreshing it failed: ${data.error ?? `HTTP ${res.status}`}${data.error_description ? ` - ${data.error_description}` : ""}`);
  }
  const fields = new Map([["hf_token", data.access_token], ["refresh_token", data.refresh_token || refreshToken]]);
  if (data.expires_in !== undefined) fields.set("expires_at", String(Math.floor(Date.now() / 1000) + Math.trunc(Number(data.expires_in))));
  const all = readStoredTokens(storedFile);
  all.set(name, fields);
  writeStoredTokens(storedFile, all);
  // The active token changes only if no other login replaced it meanwhile.
  if (readTokenFile(tokenFile) === token) writeSecret(tokenFile, data.access_token);
  return data.access_token;
}
