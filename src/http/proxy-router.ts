/**
 * The shared dispatcher when the environment names a proxy (src/http/proxy-env.ts): each request goes
 * direct or through its proxy by its own origin, so a redirect that leaves the Hub for its CDN (or a
 * registry for its storage) is routed again, as curl does per URL. http:// targets are sent to the
 * proxy as absolute-URI requests and https:// targets through a CONNECT tunnel, as curl does.
 * Loaded (with undici's ProxyAgent) only when a proxy variable is set.
 */
import type { Agent as AgentType, Dispatcher as DispatcherType } from "undici";
import connectApi from "undici/lib/api/api-connect.js";
import Dispatcher from "undici/lib/dispatcher/dispatcher.js";
import Pool from "undici/lib/dispatcher/pool.js";
import ProxyAgent from "undici/lib/dispatcher/proxy-agent.js";
import { CakeError } from "../errors.js";
import { proxyFor, type ProxyEnv, type ProxySetting } from "./proxy-env.js";

// ProxyAgent opens its tunnels with `dispatcher.connect()`, a method undici's index adds to every
// dispatcher (with the other request APIs); cake loads the modules it uses, not the index.
(Dispatcher.prototype as { connect?: unknown }).connect ??= connectApi;

/** Failures to open a connection: with a proxy in the way, the connection that failed was the proxy's. */
const CONNECT_FAILURES = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT", "UND_ERR_CONNECT_TIMEOUT"]);

export class ProxyRouter extends Dispatcher {
  readonly #direct: DispatcherType;
  readonly #proxies: ProxyEnv;
  readonly #options: AgentType.Options;
  readonly #agents = new Map<string, DispatcherType>();
  readonly #routes = new Map<string, ProxySetting | null>();

  constructor(direct: DispatcherType, proxies: ProxyEnv, options: AgentType.Options) {
    super();
    this.#direct = direct;
    this.#proxies = proxies;
    this.#options = options;
  }

  /** The proxy a request to `origin` goes through, or undefined when it goes direct. */
  proxyOf(origin: string | URL): ProxySetting | undefined {
    const key = String(origin);
    let route = this.#routes.get(key);
    if (route === undefined) this.#routes.set(key, (route = proxyFor(this.#proxies, new URL(key)) ?? null));
    return route ?? undefined;
  }

  override dispatch(opts: DispatcherType.DispatchOptions, handler: DispatcherType.DispatchHandler): boolean {
    const proxy = opts.origin === undefined ? undefined : this.proxyOf(opts.origin);
    return (proxy ? this.#agent(proxy) : this.#direct).dispatch(opts, handler);
  }

  #agent(proxy: ProxySetting): DispatcherType {
    let agent = this.#agents.get(proxy.url);
    if (!agent) {
      const { connect, ...pool } = this.#options;
      const timeout = typeof connect === "object" && connect ? connect.timeout : undefined;
      agent = new ProxyAgent({
        ...pool,
        uri: proxy.url,
        ...(proxy.authorization ? { token: proxy.authorization } : {}),
        // http:// targets as absolute-URI requests (what curl sends), not tunnelled.
        proxyTunnel: false,
        proxyTls: { timeout },
        // The pools to the proxy (and through its tunnels) get the same sizes and timeouts as direct ones.
        factory: (origin: string | URL, o: object) => new Pool(origin, { ...pool, ...o }),
      });
      this.#agents.set(proxy.url, agent);
    }
    return agent;
  }

  /**
   * The error a request to `url` failed with, as one line naming the proxy when the proxy is what
   * failed: it cannot be reached, asks for credentials (407), or refuses the tunnel.
   */
  explain(err: unknown, url: URL): unknown {
    const proxy = this.proxyOf(url.origin);
    if (!proxy || err instanceof CakeError) return err;
    const target = `${url.hostname}:${url.port || (url.protocol === "https:" ? 443 : 80)}`;
    const via = `the proxy ${proxy.url} (from ${proxy.variable})`;
    const e = err as { code?: string; syscall?: string; message?: string };
    if (e.code && CONNECT_FAILURES.has(e.code)) {
      const why = e.syscall ? `${e.syscall} ${e.code}` : e.code === "UND_ERR_CONNECT_TIMEOUT" ? "connect timed out" : e.code;
      return new CakeError("E_NETWORK", `cannot reach ${via} for ${target}: ${why}`, { cause: err });
    }
    const status = /Proxy response \((\d+)\)|Proxy Authentication Required \((407)\)/.exec(e.message ?? "");
    if (!status) return err;
    if ((status[1] ?? status[2]) === "407") {
      const what = proxy.authorization
        ? `refused the user and password in ${proxy.variable} (407) for ${target}`
        : `asks for a user and password (407) for ${target}: put them in ${proxy.variable} as http://user:password@host:port`;
      return new CakeError("E_AUTH", `${via} ${what}`, { cause: err });
    }
    return new CakeError("E_NETWORK", `${via} refused the tunnel to ${target}: it answered ${status[1]} to CONNECT`, { cause: err });
  }

  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    const done = Promise.all([this.#direct.close(), ...[...this.#agents.values()].map((a) => a.close())]).then(() => undefined);
    if (!callback) return done;
    void done.then(callback, callback);
  }

  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const err = typeof a === "function" ? null : (a ?? null);
    const callback = typeof a === "function" ? a : b;
    const done = Promise.all([this.#direct.destroy(err), ...[...this.#agents.values()].map((d) => d.destroy(err))]).then(() => undefined);
    if (!callback) return done;
    void done.then(callback, callback);
  }
}
