/**
 * `cake proxy`: the OCI distribution API in front of a Hugging Face Hub. Configuration comes from
 * flags, else environment (CAKE_PROXY_*), else a JSON config file (--config), else defaults, setting by setting:
 * loopback, port 5000, the embedded store ($CAKE_HOME), HF_ENDPOINT.
 */
import fs from "node:fs";
import type { AddressInfo } from "node:net";
import { CakeError, Store, checkIndexPrefix, hubParamsFromEnv, onRetryWait, type RegistryAccess } from "../src/index.js";
import { createApp } from "./app.js";
import { ProxyService } from "./service.js";

export interface ProxyConfig {
  host: string;
  port: number;
  store?: string;
  hub: string;
  hubToken?: string;
  aliases: Record<string, string>;
  backend?: string;
  backendAccess?: RegistryAccess;
  /** `host[:port]/prefix` of index artifacts conversions learn their units from (read with backendAccess). */
  index?: string;
  concurrency?: number;
  /** Structured logs (JSON lines) to stderr. */
  quiet?: boolean;
}

export interface RunningProxy {
  url: string;
  host: string;
  service: ProxyService;
  close(): Promise<void>;
}

/** The backend's access settings as flags (and config-file keys) name them; resolveConfig turns them into backendAccess. */
export interface BackendAccessSettings {
  backendPlainHttp?: boolean;
  backendUsername?: string;
  backendPassword?: string;
  /** A file holding the password (a mounted secret): its first line. */
  backendPasswordFile?: string;
}

export type ConfigFlags = Partial<ProxyConfig> & BackendAccessSettings & { config?: string };

/** flags > environment > config file > defaults, for every setting. */
export function resolveConfig(flags: ConfigFlags, env: NodeJS.ProcessEnv = process.env): ProxyConfig {
  const file: Partial<ProxyConfig> & BackendAccessSettings = flags.config ? (JSON.parse(fs.readFileSync(flags.config, "utf8")) as ConfigFlags) : {};
  const envAliases = env.CAKE_PROXY_ALIASES ? parseAliases(env.CAKE_PROXY_ALIASES.split(",")) : undefined;
  const hubEnv = hubParamsFromEnv();
  const pick = <T>(...vals: (T | undefined)[]) => vals.find((v) => v !== undefined && v !== "");
  const backend = pick(flags.backend, env.CAKE_PROXY_BACKEND, file.backend);
  const index = pick(flags.index, env.CAKE_PROXY_INDEX, file.index);
  const hubToken = pick(flags.hubToken, env.CAKE_PROXY_HUB_TOKEN, file.hubToken);
  const store = pick(flags.store, env.CAKE_PROXY_STORE, file.store);
  const concurrency = pick(flags.concurrency, envNumber(env, "CAKE_PROXY_CONCURRENCY"), file.concurrency);
  const plainHttp = pick(flags.backendPlainHttp, envBoolean(env, "CAKE_PROXY_BACKEND_PLAIN_HTTP"), file.backendPlainHttp);
  const username = pick(flags.backendUsername, env.CAKE_PROXY_BACKEND_USERNAME, file.backendUsername);
  // A password given at one level (inline or as a file) hides the levels below it.
  const password =
    pick(flags.backendPassword, readSecret(flags.backendPasswordFile, "--backend-password-file")) ??
    pick(env.CAKE_PROXY_BACKEND_PASSWORD, readSecret(env.CAKE_PROXY_BACKEND_PASSWORD_FILE, "CAKE_PROXY_BACKEND_PASSWORD_FILE")) ??
    pick(file.backendPassword, readSecret(file.backendPasswordFile, `${flags.config}: backendPasswordFile`));
  const backendAccess: RegistryAccess = {
    ...flags.backendAccess,
    ...(plainHttp ? { plainHttp: true } : {}),
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
  };
  return {
    host: pick(flags.host, env.CAKE_PROXY_HOST, file.host) ?? "127.0.0.1",
    port: Number(pick(flags.port, envNumber(env, "CAKE_PROXY_PORT"), file.port) ?? 5000),
    hub: (pick(flags.hub, env.CAKE_PROXY_HUB, file.hub) ?? hubEnv.hubUrl).replace(/\/+$/, ""),
    aliases: { ...file.aliases, ...envAliases, ...flags.aliases },
    ...(store ? { store } : {}),
    ...(hubToken ? { hubToken } : {}),
    ...(backend ? { backend } : {}),
    ...(index ? { index: checkIndexPrefix(index, "proxy index") } : {}),
    ...(concurrency ? { concurrency } : {}),
    ...(Object.keys(backendAccess).length ? { backendAccess } : {}),
    ...(flags.quiet ? { quiet: true } : {}),
  };
}

function envNumber(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new CakeError("E_USAGE", `${name}=${JSON.stringify(v)}: want a whole number`);
  return n;
}

function envBoolean(env: NodeJS.ProcessEnv, name: string): boolean | undefined {
  const v = env[name]?.toLowerCase();
  if (v === undefined || v === "") return undefined;
  if (["1", "true", "yes"].includes(v)) return true;
  if (["0", "false", "no"].includes(v)) return false;
  throw new CakeError("E_USAGE", `${name}=${JSON.stringify(env[name])}: want true or false (or 1, 0)`);
}

/** The first line of a secret's file (Docker and Kubernetes secrets end in a newline, or not); the error never quotes it. */
function readSecret(file: string | undefined, what: string): string | undefined {
  if (!file) return undefined;
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new CakeError("E_USAGE", `${what} ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? "error"}); give a readable file holding the password`);
  }
  return text.split(/\r?\n/, 1)[0];
}

export function parseAliases(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of list) {
    const m = /^([a-z0-9][a-z0-9._-]*)=([A-Za-z0-9][\w.-]*\/[\w.-]+)$/.exec(a.trim());
    if (!m) throw new CakeError("E_USAGE", `bad alias ${JSON.stringify(a)} (want name=org/model, name in lower case)`);
    out[m[1]!] = m[2]!;
  }
  return out;
}

export async function startProxy(cfg: ProxyConfig): Promise<RunningProxy> {
  const log = cfg.quiet ? undefined : (e: Record<string, unknown>) => process.stderr.write(JSON.stringify({ time: new Date().toISOString(), ...e }) + "\n");
  // A long wait the Hub asked for (its rate limit's reset) is logged, not sat through silently.
  if (log) onRetryWait((message) => log({ event: "upstream-wait", message }));
  const service = new ProxyService({
    store: new Store(cfg.store),
    hubUrl: cfg.hub,
    aliases: cfg.aliases,
    ...(cfg.hubToken ? { hubToken: cfg.hubToken } : {}),
    ...(cfg.backend ? { backend: cfg.backend } : {}),
    ...(cfg.backendAccess ? { backendAccess: cfg.backendAccess } : {}),
    ...(cfg.index ? { index: cfg.index } : {}),
    ...(cfg.concurrency ? { concurrency: cfg.concurrency } : {}),
    ...(log ? { log } : {}),
  });
  await service.opts.store.init();
  const app = createApp(service, log ? { log } : {});
  const server = app.listen(cfg.port, cfg.host);
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  // A first conversion can take minutes: never cut a waiting client on our side.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 30_000;
  const { port } = server.address() as AddressInfo;
  const host = `${cfg.host.includes(":") ? `[${cfg.host}]` : cfg.host}:${port}`;
  log?.({ event: "listening", url: `http://${host}`, hub: cfg.hub, store: service.opts.store.root, backend: cfg.backend ?? null });
  return {
    url: `http://${host}`,
    host,
    service,
    close: async () => {
      // Background pushes to the backend are cancelled (their upload sessions deleted) and claims released.
      await service.stop();
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}
