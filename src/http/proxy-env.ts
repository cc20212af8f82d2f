/**
 * The proxy settings curl reads from the environment, and which proxy (if any) a URL goes through.
 *
 * - `http://` URLs: `http_proxy`, then `HTTP_PROXY`. curl reads only the lower-case name, because a
 *   CGI program gets a request's `Proxy:` header as `HTTP_PROXY` ("httpoxy"); huggingface_hub,
 *   requests and httpx read both, so cake does too, lower case first, and skips `HTTP_PROXY` when
 *   `REQUEST_METHOD` says it runs as CGI (as Go does).
 * - `https://` URLs: `https_proxy`, then `HTTPS_PROXY`.
 * - either, when its own is unset: `all_proxy`, then `ALL_PROXY`.
 * - `no_proxy`, then `NO_PROXY`: hosts that go direct (see `parseNoProxy`).
 *
 * An empty variable counts as unset. A proxy URL without a scheme is `http://`; without a port, 1080
 * for http:// and 443 for https://, as curl. Credentials in it (`http://user:pass@proxy:3128`) become
 * the Proxy-Authorization header and never appear in `ProxySetting.url`, which is what messages print.
 * See curl's url.c (detect_proxy) and noproxy.c.
 */
import { BlockList, isIP } from "node:net";
import { CakeError } from "../errors.js";

export interface ProxySetting {
  /** `scheme://host:port` of the proxy, without credentials: safe to print. */
  url: string;
  /** The variable it was read from, e.g. `HTTPS_PROXY`. */
  variable: string;
  /** `Basic …` from the credentials in the URL, for Proxy-Authorization. */
  authorization?: string;
}

export interface ProxyEnv {
  http?: ProxySetting;
  https?: ProxySetting;
  noProxy: NoProxy;
}

type Env = Record<string, string | undefined>;

const first = (env: Env, names: string[]): { name: string; value: string } | undefined => {
  for (const name of names) {
    const value = env[name]?.trim();
    if (value) return { name, value };
  }
  return undefined;
};

/** The proxies the environment names, or undefined when it names none (then nothing proxy-related is loaded). */
export function readProxyEnv(env: Env = process.env): ProxyEnv | undefined {
  const all = ["all_proxy", "ALL_PROXY"];
  const http = first(env, ["http_proxy", ...(env.REQUEST_METHOD ? [] : ["HTTP_PROXY"]), ...all]);
  const https = first(env, ["https_proxy", "HTTPS_PROXY", ...all]);
  if (!http && !https) return undefined;
  return {
    ...(http ? { http: parseProxyUrl(http.value, http.name) } : {}),
    ...(https ? { https: parseProxyUrl(https.value, https.name) } : {}),
    noProxy: parseNoProxy(first(env, ["no_proxy", "NO_PROXY"])?.value ?? ""),
  };
}

/** The proxy `url` goes through, or undefined to go direct. */
export function proxyFor(proxies: ProxyEnv, url: URL): ProxySetting | undefined {
  const proxy = url.protocol === "https:" ? proxies.https : url.protocol === "http:" ? proxies.http : undefined;
  if (!proxy) return undefined;
  return proxies.noProxy(url.hostname, Number(url.port) || defaultPort(url.protocol)) ? undefined : proxy;
}

const defaultPort = (protocol: string) => (protocol === "https:" ? 443 : 80);

export function parseProxyUrl(value: string, variable: string): ProxySetting {
  const raw = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new CakeError("E_USAGE", `${variable} is not a proxy URL: ${redact(value)} (expected http://host:port)`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new CakeError("E_USAGE", `${variable}=${redact(value)}: cake speaks to HTTP proxies only (http:// or https://)`);
  }
  // The URL parser drops a default port (":80"), so whether one was written is read from the text.
  const authority = raw.replace(/^[^:]+:\/\//, "").split(/[/?#]/)[0]!.replace(/^.*@/, "");
  const port = u.port || (/:\d+$/.test(authority) ? String(defaultPort(u.protocol)) : u.protocol === "http:" ? "1080" : "443");
  const setting: ProxySetting = { url: `${u.protocol}//${u.hostname}:${port}`, variable };
  if (u.username || u.password) {
    const user = `${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`;
    setting.authorization = `Basic ${Buffer.from(user).toString("base64")}`;
  }
  return setting;
}

/** The value with any credentials (what comes before `@`) masked. */
const redact = (value: string) => value.replace(/\/\/[^/@]*@/, "//***@").replace(/^[^/@]*@/, "***@");

/** True when (host, port) goes direct. */
export type NoProxy = (host: string, port: number) => boolean;

/**
 * `NO_PROXY` as curl reads it: entries separated by commas or spaces; `*` (every host); a host name,
 * matching itself and its subdomains (a leading dot is allowed: `.example.com` and `example.com` are
 * the same); an IP address or a CIDR range (`10.0.0.0/8`, `fd00::/8`), matching IP-address hosts
 * only (as curl, `localhost` does not match `127.0.0.1`). Beyond curl, as Go and Python: an entry may
 * end in `:port` (IPv6 in brackets, `[::1]:8080`) and then matches that port only.
 */
export function parseNoProxy(value: string): NoProxy {
  const names: { name: string; port?: number }[] = [];
  const ips: { list: BlockList; port?: number }[] = [];
  let all = false;
  for (const token of value.split(/[\s,]+/).filter(Boolean)) {
    if (token === "*") {
      all = true;
      continue;
    }
    const { host, port } = splitPort(token);
    const [addr, bits] = host.split("/") as [string, string | undefined];
    const family = isIP(addr);
    if (family) {
      const list = new BlockList();
      const type = family === 6 ? "ipv6" : "ipv4";
      const max = family === 6 ? 128 : 32;
      const prefix = bits === undefined ? max : /^\d+$/.test(bits) ? Number(bits) : NaN;
      if (!(prefix >= 0 && prefix <= max)) continue; // not a range: ignored, as curl does
      list.addSubnet(addr, prefix, type);
      ips.push({ list, port });
    } else if (bits === undefined) {
      const name = host.replace(/^\./, "").replace(/\.$/, "").toLowerCase();
      if (name) names.push({ name, port });
    }
  }
  return (rawHost, port) => {
    if (all) return true;
    const host = rawHost.replace(/^\[(.*)\]$/, "$1").replace(/\.$/, "").toLowerCase();
    const portOk = (p?: number) => p === undefined || p === port;
    const family = isIP(host);
    if (family) return ips.some((e) => portOk(e.port) && e.list.check(host, family === 6 ? "ipv6" : "ipv4"));
    return names.some((e) => portOk(e.port) && (host === e.name || host.endsWith(`.${e.name}`)));
  };
}

/** `host:port`, `[v6]:port`, or a bare host / IPv6 address / range. */
function splitPort(token: string): { host: string; port?: number } {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(token);
  if (bracketed) return { host: bracketed[1]!, ...(bracketed[2] ? { port: Number(bracketed[2]) } : {}) };
  const m = /^([^:]+):(\d+)$/.exec(token); // one colon only: more is an IPv6 address
  return m ? { host: m[1]!, port: Number(m[2]) } : { host: token };
}
