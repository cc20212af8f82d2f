/**
 * Registry authentication: where credentials come from (explicit, docker's config.json, docker
 * credential helpers), how a registry asks for them (`WWW-Authenticate`, RFC 7235), and the
 * Bearer token dance of the distribution token spec
 * (https://distribution.github.io/distribution/spec/auth/token/, .../auth/oauth/).
 *
 * Credentials are matched on the exact normalised host, as docker and sigstore-js do: a
 * `config.json` key `https://index.docker.io/v1/` is host `index.docker.io`, and nothing is ever
 * sent to a host it was not stored for.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import type { Dispatcher } from "undici";
import { CakeError, isCakeError } from "../errors.js";
import { header, httpReadAll, httpRequest, type HttpDocument } from "../http/request.js";
import type { RetryPolicy } from "../http/retry.js";
import { errorFromBody, registryError, urlish } from "./errors.js";
import { DOCKER_HUB, isPlainHttpHost } from "./reference.js";

// ---------------------------------------------------------------------------------------------
// Credentials

export interface Credentials {
  username?: string;
  password?: string;
  /** An OAuth2 refresh token (`identitytoken` in config.json, username `<token>` from a helper). */
  identityToken?: string;
  /** Where they came from, for error messages: "--username", "~/.docker/config.json", "docker-credential-x". */
  source: string;
}

/** The docker config directory: the given one, else `$DOCKER_CONFIG`, else `~/.docker`. */
export function dockerConfigDir(dir?: string): string {
  return dir ?? process.env.DOCKER_CONFIG ?? join(homedir(), ".docker");
}

const DOCKER_HUB_HOSTS = new Set(["docker.io", "index.docker.io", "registry-1.docker.io"]);

/**
 * The key credentials are stored and matched under: a config.json key or registry host with its
 * scheme and path removed, lowercased; Docker Hub's names all become `index.docker.io`.
 */
export function credentialHost(hostOrKey: string): string {
  let h = hostOrKey.trim().toLowerCase().replace(/^[a-z][a-z0-9+.-]*:\/\//, "");
  const slash = h.indexOf("/");
  if (slash >= 0) h = h.slice(0, slash);
  return DOCKER_HUB_HOSTS.has(h) ? "index.docker.io" : h;
}

/** What docker writes as the server address for a host (Docker Hub keeps its historic URL). */
function serverAddress(host: string): string {
  return credentialHost(host) === "index.docker.io" ? "https://index.docker.io/v1/" : host;
}

interface DockerConfigFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [key: string]: unknown;
}

async function readDockerConfig(file: string): Promise<DockerConfigFile | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CakeError("E_IO", `${file}: cannot read docker config: ${(err as Error).message}`, { cause: err });
  }
  try {
    const parsed = JSON.parse(text.replace(/^\uFEFF/, "")) as unknown;
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not a JSON object");
    return parsed as DockerConfigFile;
  } catch (err) {
    throw new CakeError("E_IO", `${file}: docker config is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

function findKey<T>(map: Record<string, T> | undefined, host: string): string | undefined {
  if (!map || typeof map !== "object") return undefined;
  const want = credentialHost(host);
  return Object.keys(map).find((k) => credentialHost(k) === want);
}

/**
 * Credentials for `host` from the docker config: `credHelpers[host]`, else `credsStore`, else
 * `auths[host]` (`auth` = base64 "user:pass", or `username`/`password`, plus `identitytoken`).
 * Undefined when there are none.
 */
export async function lookupCredentials(host: string, opts: { dockerConfig?: string } = {}): Promise<Credentials | undefined> {
  const file = join(dockerConfigDir(opts.dockerConfig), "config.json");
  const config = await readDockerConfig(file);
  if (!config) return undefined;

  const helperKey = findKey(config.credHelpers, host);
  const helper = helperKey !== undefined ? config.credHelpers?.[helperKey] : config.credsStore;
  if (typeof helper === "string" && helper !== "") {
    const fromHelper = await helperGet(helper, serverAddress(host));
    if (fromHelper) return fromHelper;
  }

  const key = findKey(config.auths, host);
  const entry = key !== undefined ? config.auths?.[key] : undefined;
  if (!entry || typeof entry !== "object") return undefined;
  const creds: Credentials = { source: file };
  if (typeof entry.auth === "string" && entry.auth !== "") {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) throw new CakeError("E_AUTH", `${file}: auths["${key}"].auth is not base64 "user:password"`);
    creds.username = decoded.slice(0, colon);
    creds.password = decoded.slice(colon + 1);
  } else if (typeof entry.username === "string" && typeof entry.password === "string") {
    creds.username = entry.username;
    creds.password = entry.password;
  }
  if (typeof entry.identitytoken === "string" && entry.identitytoken !== "") creds.identityToken = entry.identitytoken;
  return creds.username !== undefined || creds.identityToken !== undefined ? creds : undefined;
}

// ---------------------------------------------------------------------------------------------
// docker-credential-* helpers (https://github.com/docker/docker-credential-helpers#development)

const HELPER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const HELPER_TIMEOUT_MS = 60_000;

function runHelper(name: string, action: "get" | "store", input: string): Promise<{ code: number; stdout: string; stderr: string }> {
  if (!HELPER_NAME.test(name)) throw new CakeError("E_AUTH", `credential helper name "${name}" is not valid`);
  const program = `docker-credential-${name}`;
  return new Promise((resolve, reject) => {
    const child = spawn(program, [action], { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => child.kill("SIGKILL"), HELPER_TIMEOUT_MS);
    child.stdout.on("data", (b: Buffer) => {
      size += b.length;
      if (size <= 1 << 20) out.push(b);
    });
    child.stderr.on("data", (b: Buffer) => {
      if (err.length < 64) err.push(b);
    });
    child.on("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new CakeError(
          "E_AUTH",
          e.code === "ENOENT"
            ? `${program} not found on PATH (configured as a credential helper in docker's config.json)`
            : `${program}: ${e.message}`,
          { cause: e },
        ),
      );
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") });
    });
    child.stdin.on("error", () => {
      /* the helper may exit without reading; its exit status tells */
    });
    child.stdin.end(input);
  });
}

async function helperGet(name: string, server: string): Promise<Credentials | undefined> {
  const { code, stdout, stderr } = await runHelper(name, "get", server);
  const program = `docker-credential-${name}`;
  if (code !== 0) {
    if (/credentials not found/i.test(stdout + stderr)) return undefined;
    throw new CakeError("E_AUTH", `${program} get ${server} failed: ${(stdout || stderr).trim().split("\n")[0] ?? `exit ${code}`}`);
  }
  let parsed: { Username?: unknown; Secret?: unknown };
  try {
    parsed = JSON.parse(stdout) as typeof parsed;
  } catch {
    throw new CakeError("E_AUTH", `${program} get ${server}: output is not JSON`);
  }
  if (typeof parsed.Secret !== "string" || parsed.Secret === "") return undefined;
  if (parsed.Username === "<token>") return { identityToken: parsed.Secret, source: program };
  return { username: typeof parsed.Username === "string" ? parsed.Username : "", password: parsed.Secret, source: program };
}

async function helperStore(name: string, server: string, username: string, secret: string): Promise<void> {
  const { code, stdout, stderr } = await runHelper(name, "store", JSON.stringify({ ServerURL: server, Username: username, Secret: secret }));
  if (code !== 0) {
    throw new CakeError("E_AUTH", `docker-credential-${name} store ${server} failed: ${(stdout || stderr).trim().split("\n")[0] ?? `exit ${code}`}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Challenges

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

/** `repository:<name>:<actions>` as the token spec spells a scope. */
export const repositoryScope = (repository: string, actions: "pull" | "pull,push" | "delete" | string) =>
  `repository:${repository}:${actions}`;

/** Merges scopes, joining actions on the same resource (`repository:a:pull` + `repository:a:push`). */
export function mergeScopes(...lists: string[][]): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const scope of lists.flat()) {
    const last = scope.lastIndexOf(":");
    if (last <= 0) continue;
    const resource = scope.slice(0, last);
    const actions = byResource.get(resource) ?? new Set<string>();
    for (const a of scope.slice(last + 1).split(",")) if (a) actions.add(a);
    byResource.set(resource, actions);
  }
  return [...byResource.entries()].map(([r, a]) => `${r}:${[...a].sort().join(",")}`).sort();
}

// ---------------------------------------------------------------------------------------------
// Authenticator: one per registry host

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

// ---------------------------------------------------------------------------------------------
// login

export interface LoginOptions {
  /** Docker config directory (default `$DOCKER_CONFIG` or `~/.docker`). */
  dockerConfig?: string;
  plainHttp?: boolean;
  userAgent?: string;
  dispatcher?: Dispatcher;
}

/**
 * Checks `username`/`password` against the registry's `/v2/` (through its token server if it has
 * one) and stores them as docker does: with the configured credential helper, else in
 * `config.json` `auths[host].auth` (mode 0600, written to a temp file and renamed, other keys kept).
 * Returns where they went.
 */
export async function login(registry: string, username: string, password: string, opts: LoginOptions = {}): Promise<{ storedIn: string }> {
  const host = registry.toLowerCase();
  const apiHost = credentialHost(host) === "index.docker.io" ? DOCKER_HUB : host;
  const base = `${opts.plainHttp ?? isPlainHttpHost(apiHost) ? "http" : "https"}://${apiHost}/v2/`;
  const auth = new Authenticator({
    registry: host,
    credentials: async () => ({ username, password, source: "login" }),
    userAgent: opts.userAgent,
    dispatcher: opts.dispatcher,
  });
  const get = async (authorization?: string) => {
    try {
      return await httpRequest(base, {
        headers: { "user-agent": opts.userAgent ?? "cake", ...(authorization ? { authorization } : {}) },
        dispatcher: opts.dispatcher,
      });
    } catch (err) {
      throw new CakeError("E_NETWORK", `${host}: GET ${urlish(base)}: ${(err as Error).message}`, { cause: err });
    }
  };
  let res = await get();
  if (res.status === 401) {
    const www = res.headers["www-authenticate"];
    await res.body.dump();
    const authorization = await auth.challenge(www, [], undefined);
    if (!authorization) throw new CakeError("E_AUTH", `${host}: login: the registry asks for an authentication scheme cake does not speak (${header(res.headers, "www-authenticate") ?? "none"})`);
    res = await get(authorization);
  }
  if (res.status !== 200) {
    const hint = res.status === 401 || res.status === 403 ? `credentials for user "${username}" were not accepted` : undefined;
    throw await registryError(res, "GET", base, `${host}: login`, hint);
  }
  await res.body.dump();

  const dir = dockerConfigDir(opts.dockerConfig);
  const file = join(dir, "config.json");
  const config = (await readDockerConfig(file)) ?? {};
  const helperKey = findKey(config.credHelpers, host);
  const helper = helperKey !== undefined ? config.credHelpers?.[helperKey] : config.credsStore;
  if (typeof helper === "string" && helper !== "") {
    await helperStore(helper, serverAddress(host), username, password);
    return { storedIn: `docker-credential-${helper}` };
  }
  const auths = config.auths && typeof config.auths === "object" ? config.auths : {};
  const key = findKey(auths, host) ?? serverAddress(host);
  const { identitytoken: _dropped, ...kept } = auths[key] ?? {};
  auths[key] = { ...kept, auth: Buffer.from(`${username}:${password}`).toString("base64") };
  delete auths[key].username;
  delete auths[key].password;
  config.auths = auths;
  await writeFileAtomic(file, `${JSON.stringify(config, null, "\t")}\n`);
  return { storedIn: file };
}

/** Writes a private file whole or not at all: temp file (0600), fsync, rename over the target. */
async function writeFileAtomic(file: string, text: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    const fh = await open(tmp, "wx", 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new CakeError("E_IO", `${file}: cannot write docker config: ${(err as Error).message}`, { cause: err });
  }
}
