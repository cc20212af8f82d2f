/**
 * How a registry asks for credentials (`WWW-Authenticate`, RFC 7235) and the answer cake gives: a
 * Basic header, or a Bearer token from the registry's token server, per the distribution token spec
 * (https://distribution.github.io/distribution/spec/auth/token/, .../auth/oauth/).
 */
import type { Dispatcher } from "undici";
import { CakeError, isCakeError } from "../../errors.js";
import { httpReadAll, type HttpDocument } from "../../http/request.js";
import type { RetryPolicy } from "../../http/retry.js";
import { errorFromBody, urlish } from "../errors.js";
import type { Credentials } from "./docker-config.js";
import { mergeScopes } from "./scope.js";

export interface Challenge {
  /** Lowercase: "basic", "bearer", … */
  scheme: string;
  /** Parameter names lowercase, values unquoted. */
  params: Record<string, string>;
}

const TOKEN_CHARS = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parses `WWW-Authenticate` (RFC 7235 §4.1): one or more challenges, each a scheme followed by
 * comma-separated `name=value` or `name="quoted, value"` parameters.
 */
export function parseWWWAuthenticate(value: string | string[] | undefined): Challenge[] {
  const s = Array.isArray(value) ? value.join(", ") : (value ?? "");
  const out: Challenge[] = [];
  let i = 0;
  const ws = () => {
    while (i < s.length && (s[i] === " " || s[i] === "\t")) i++;
  };
  const token = () => {
    const start = i;
    while (i < s.length && TOKEN_CHARS.test(s[i]!)) i++;
    return s.slice(start, i);
  };
  while (i < s.length) {
    ws();
    if (s[i] === ",") {
      i++;
      continue;
    }
    const scheme = token();
    if (!scheme) {
      i++;
      continue;
    }
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    for (;;) {
      ws();
      while (s[i] === ",") {
        i++;
        ws();
      }
      const save = i;
      const name = token();
      ws();
      if (!name || s[i] !== "=") {
        i = save; // the next challenge's scheme (or the end)
        break;
      }
      i++;
      ws();
      let v = "";
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === "\\" && i + 1 < s.length) i++;
          v += s[i];
          i++;
        }
        i++;
      } else {
        while (i < s.length && s[i] !== "," && s[i] !== " " && s[i] !== "\t") v += s[i++];
      }
      challenge.params[name.toLowerCase()] = v;
    }
  }
  return out;
}

export interface AuthenticatorOptions {
  registry: string;
  /** Resolved lazily, once. */
  credentials: () => Promise<Credentials | undefined>;
  userAgent?: string;
  dispatcher?: Dispatcher;
  retry?: Partial<RetryPolicy>;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** Bearer tokens last this long when the token server does not say (token spec: 60 s). */
export const DEFAULT_TOKEN_SECONDS = 60;
const TOKEN_RESPONSE_LIMIT = 1 << 20;

/**
 * Turns scopes into an Authorization header for one registry: learns the scheme from the first
 * 401, caches Bearer tokens per scope set until `expires_in`, and gets a fresh one when the
 * registry refuses a token it gave (expired during a long upload).
 */
export class Authenticator {
  readonly registry: string;
  private readonly opts: AuthenticatorOptions;
  private scheme: "basic" | "bearer" | undefined;
  private realm: string | undefined;
  private service: string | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<CachedToken>>();
  private creds: Promise<Credentials | undefined> | undefined;

  constructor(opts: AuthenticatorOptions) {
    this.registry = opts.registry;
    this.opts = opts;
  }

  credentials(): Promise<Credentials | undefined> {
    this.creds ??= this.opts.credentials();
    return this.creds;
  }

  /** The header to send for a request needing `scopes`, as far as the registry is known so far. */
  async authorization(scopes: string[]): Promise<string | undefined> {
    if (this.scheme === "basic") return this.basic();
    if (this.scheme === "bearer") return `Bearer ${(await this.token(mergeScopes(scopes))).token}`;
    return undefined;
  }

  /**
   * After a 401: learns the challenge, forgets the token that was refused, and returns the header
   * to retry with, or undefined when there is nothing better to send.
   */
  async challenge(wwwAuthenticate: string | string[] | undefined, scopes: string[], sent: string | undefined): Promise<string | undefined> {
    const challenges = parseWWWAuthenticate(wwwAuthenticate);
    const bearer = challenges.find((c) => c.scheme === "bearer" && c.params.realm);
    if (bearer) {
      this.scheme = "bearer";
      this.realm = bearer.params.realm;
      this.service = bearer.params.service;
      const wanted = mergeScopes(scopes, (bearer.params.scope ?? "").split(" ").filter(Boolean));
      if (sent?.startsWith("Bearer ")) {
        const refused = sent.slice("Bearer ".length);
        for (const [k, t] of this.tokens) if (t.token === refused) this.tokens.delete(k);
      }
      return `Bearer ${(await this.token(wanted)).token}`;
    }
    if (challenges.some((c) => c.scheme === "basic")) {
      this.scheme = "basic";
      const h = await this.basic();
      return h === sent ? undefined : h;
    }
    return undefined;
  }

  /** Words for an E_AUTH message: whose credentials were refused, or that there were none. */
  async describeCredentials(): Promise<string> {
    const c = await this.credentials();
    if (!c) return `no credentials for ${this.registry}; log in first`;
    return `credentials${c.username ? ` for user "${c.username}"` : ""} from ${c.source} were not accepted`;
  }

  private async basic(): Promise<string | undefined> {
    const c = await this.credentials();
    if (!c || c.username === undefined || c.password === undefined) return undefined;
    return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString("base64")}`;
  }

  private async token(scopes: string[]): Promise<CachedToken> {
    const key = scopes.join(" ");
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return cached;
    let p = this.pending.get(key);
    if (!p) {
      p = this.fetchToken(scopes).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    const t = await p;
    this.tokens.set(key, t);
    return t;
  }

  private async fetchToken(scopes: string[]): Promise<CachedToken> {
    const realm = this.realm!;
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm);
      if (realmUrl.protocol !== "https:" && realmUrl.protocol !== "http:") throw new Error("not http(s)");
    } catch {
      throw new CakeError("E_AUTH", `${this.registry}: token realm "${realm}" is not an http(s) URL`);
    }
    const creds = await this.credentials();
    const headers: Record<string, string> = { "user-agent": this.opts.userAgent ?? "cake" };
    let res: HttpDocument;
    let method: "GET" | "POST";
    if (creds?.identityToken) {
      // OAuth2 refresh-token grant (https://distribution.github.io/distribution/spec/auth/oauth/)
      method = "POST";
      const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: creds.identityToken, client_id: "cake" });
      if (this.service) form.set("service", this.service);
      if (scopes.length > 0) form.set("scope", scopes.join(" "));
      headers["content-type"] = "application/x-www-form-urlencoded";
      res = await this.tokenRequest(realmUrl.toString(), { method, headers, body: form.toString() });
    } else {
      method = "GET";
      if (this.service) realmUrl.searchParams.set("service", this.service);
      for (const s of scopes) realmUrl.searchParams.append("scope", s);
      const basic = await this.basic();
      if (basic) headers.authorization = basic;
      res = await this.tokenRequest(realmUrl.toString(), { method, headers });
    }
    if (res.status !== 200) {
      const hint = res.status === 401 || res.status === 403 ? await this.describeCredentials() : undefined;
      throw errorFromBody(res.status, res.bytes, method, realmUrl.toString(), `${this.registry}: token server`, hint);
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(res.bytes.toString("utf8")) as typeof body;
    } catch (err) {
      throw new CakeError("E_AUTH", `${this.registry}: token server ${urlish(realm)} answered with something that is not a token: ${(err as Error).message}`, { cause: err });
    }
    const token = typeof body.token === "string" && body.token ? body.token : body.access_token;
    if (typeof token !== "string" || token === "") {
      throw new CakeError("E_AUTH", `${this.registry}: token server ${urlish(realm)} answered without a token`);
    }
    const seconds = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_SECONDS;
    // Renew a little early so a token does not expire between the check and its use.
    return { token, expiresAt: Date.now() + seconds * 900 };
  }

  /** A token request, its answer read whole (a cut answer is asked again, as every request is). */
  private async tokenRequest(url: string, req: { method: "GET" | "POST"; headers: Record<string, string>; body?: string }): Promise<HttpDocument> {
    try {
      return await httpReadAll(url, { ...req, retry: this.opts.retry, dispatcher: this.opts.dispatcher, limit: TOKEN_RESPONSE_LIMIT, what: `${this.registry}: token server ${urlish(url)}` });
    } catch (err) {
      if (isCakeError(err, "E_SIZE")) throw err;
      if (isCakeError(err, "E_NETWORK")) throw new CakeError("E_NETWORK", `${this.registry}: token server: ${err.message}`, { cause: err });
      throw new CakeError("E_NETWORK", `${this.registry}: token server ${urlish(url)}: ${(err as Error).message}`, { cause: err });
    }
  }
}
