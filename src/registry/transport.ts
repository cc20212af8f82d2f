/**
 * RegistryTransport: how every request to one registry host goes out — its origin, the
 * Authenticator that answers 401s, the user agent and the client's retry and dispatcher options —
 * and how a failed answer becomes one CakeError naming registry, repository and reference
 * (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes).
 * The manifest, blob, upload and tag roles (manifests.ts, blobs.ts, upload.ts, tags.ts) send
 * through it; RegistryClient (client.ts) owns one.
 */
import { CakeError, isCakeError } from "../errors.js";
import { header, httpReadAll, httpRequest, type HttpDocument, type HttpMethod, type HttpRequest, type HttpResponse } from "../http/request.js";
import { describeError, type RetryPolicy } from "../http/retry.js";
import { Authenticator, lookupCredentials, repositoryScope, type Credentials } from "./auth/index.js";
import { errorFromBody, registryError, urlish } from "./errors.js";
import type { RegistryClientOptions } from "./options.js";
import { DOCKER_HUB, assertRepository, isPlainHttpHost } from "./reference.js";
import { findSourceError } from "./source-error.js";

export interface SendRequest {
  method: HttpMethod;
  headers?: Record<string, string>;
  body?: HttpRequest["body"];
  scopes: string[];
  context: string;
  signal?: AbortSignal;
  retry?: Partial<RetryPolicy>;
  followRedirects?: boolean;
}

export class RegistryTransport {
  readonly registry: string;
  /** `http(s)://host[:port]` */
  readonly origin: string;
  readonly opts: RegistryClientOptions;
  private readonly auth: Authenticator;
  private readonly userAgent: string;

  constructor(opts: RegistryClientOptions) {
    const registry = opts.registry.toLowerCase();
    this.registry = registry === "docker.io" || registry === "index.docker.io" ? DOCKER_HUB : registry;
    this.opts = opts;
    this.origin = `${opts.plainHttp ?? isPlainHttpHost(this.registry) ? "http" : "https"}://${this.registry}`;
    this.userAgent = opts.userAgent ?? "cake";
    const explicit: Credentials | undefined =
      opts.username !== undefined || opts.password !== undefined
        ? { username: opts.username ?? "", password: opts.password ?? "", source: "--username/--password" }
        : undefined;
    this.auth = new Authenticator({
      registry: this.registry,
      credentials: async () => explicit ?? (await lookupCredentials(this.registry, { dockerConfig: opts.dockerConfig })),
      userAgent: this.userAgent,
      dispatcher: opts.dispatcher,
      retry: opts.retry,
    });
  }

  /** `registry/repo`, `registry/repo:tag` or `registry/repo@digest`: what every message names. */
  context(repo: string, reference?: string): string {
    assertRepository(repo, this.registry);
    if (reference === undefined) return `${this.registry}/${repo}`;
    return `${this.registry}/${repo}${reference.includes(":") ? "@" : ":"}${reference}`;
  }

  /** `/v2/<repo>/<rest>` on this registry. */
  url(repo: string, rest: string): string {
    return `${this.origin}/v2/${repo}/${rest}`;
  }

  pullScopes(repo: string): string[] {
    return [repositoryScope(repo, "pull")];
  }

  pushScopes(repo: string): string[] {
    return [repositoryScope(repo, "pull,push")];
  }

  /** Where the credentials in use came from, for a message about a refusal. */
  describeCredentials(): Promise<string> {
    return this.auth.describeCredentials();
  }

  /** One request with authentication (see `authorized`); the caller owns the streaming body. */
  send(url: string, req: SendRequest): Promise<HttpResponse> {
    return this.authorized(url, req, (r) => httpRequest(url, r), (res) => res.body.dump());
  }

  /**
   * A small answer (a manifest, a tag page, a config) read whole with authentication: an answer cut
   * half-way is asked again in the same retry loop as the request itself (src/http `httpReadAll`).
   * Answers that are not 2xx come back read (up to 64 KiB) for `failRead`.
   */
  sendRead(url: string, req: SendRequest, limit: number, what: string): Promise<HttpDocument> {
    return this.authorized(url, req, (r) => httpReadAll(url, { ...r, limit, what: `${req.context}: ${what}` }), async () => {});
  }

  /**
   * One request with authentication: the header the Authenticator has for these scopes, and on
   * a 401 one more try with what the challenge asks for (a token refreshed, a scope added).
   * Authorization only ever goes to the registry's own origin.
   */
  private async authorized<T extends { status: number; headers: HttpResponse["headers"] }>(
    url: string,
    req: SendRequest,
    call: (r: HttpRequest) => Promise<T>,
    drop: (res: T) => Promise<unknown>,
  ): Promise<T> {
    const sameOrigin = new URL(url).origin === this.origin;
    let authorization = sameOrigin ? await this.auth.authorization(req.scopes) : undefined;
    for (let attempt = 0; ; attempt++) {
      let res: T;
      try {
        res = await call({
          method: req.method,
          headers: { "user-agent": this.userAgent, ...req.headers, ...(authorization ? { authorization } : {}) },
          body: req.body,
          signal: req.signal,
          followRedirects: req.followRedirects,
          retry: req.retry ?? this.opts.retry,
          dispatcher: this.opts.dispatcher,
        });
      } catch (err) {
        if (req.signal?.aborted || findSourceError(err)) throw err;
        if (isCakeError(err, "E_NETWORK")) throw new CakeError("E_NETWORK", `${req.context}: ${err.message}`, { cause: err });
        if (isCakeError(err)) throw err;
        throw new CakeError("E_NETWORK", `${req.context}: ${req.method} ${urlish(url)}: ${describeError(err)}`, { cause: err });
      }
      if (res.status !== 401 || attempt > 0 || !sameOrigin) return res;
      let next: string | undefined;
      try {
        next = await this.auth.challenge(res.headers["www-authenticate"], req.scopes, authorization);
      } catch (err) {
        await drop(res).catch(() => {});
        throw err;
      }
      if (next === undefined) return res;
      await drop(res);
      authorization = next;
    }
  }

  /** The error for an answer read whole by `sendRead`. */
  async failRead(res: HttpDocument, method: string, url: string, ctx: string) {
    const hint = res.status === 401 || res.status === 403 ? await this.auth.describeCredentials() : undefined;
    return errorFromBody(res.status, res.bytes, method, url, ctx, hint);
  }

  /** The error for a streamed answer that is not the one hoped for (its body is read, up to a limit). */
  async fail(res: HttpResponse, method: string, url: string, ctx: string) {
    const hint = res.status === 401 || res.status === 403 ? await this.auth.describeCredentials() : undefined;
    return registryError(res, method, url, ctx, hint);
  }

  /** Throws when the registry says it stored something under another digest than the one sent. */
  checkDigestHeader(res: HttpResponse, expected: string, ctx: string, what: string): void {
    const claimed = header(res.headers, "docker-content-digest");
    if (claimed?.startsWith("sha256:") && claimed !== expected) {
      throw new CakeError("E_DIGEST", `${ctx}: the registry stored the ${what} as ${claimed}, expected ${expected}`);
    }
  }
}
