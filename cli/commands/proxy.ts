import { Command } from "commander";
import { CakeError, MT, closeSharedDispatcher, tokenFromEnv } from "../../src/index.js";
import { parseHttpUrl, parsePort, parsePositiveInt, say } from "../context.js";

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function proxyCommand(): Command {
  const cmd = new Command("proxy")
    .description("serve Hub models over the OCI distribution API: oras pull localhost:5000/hf/<org>/<model>:<revision>")
    .option("--port <n>", "port (default 5000)", parsePort)
    .option("--host <addr>", "address to listen on (default 127.0.0.1)")
    .option("--store <dir>", "the store (default $CAKE_HOME)")
    .option("--hub <url>", "the Hub (default $HF_ENDPOINT or https://huggingface.co)", parseHttpUrl)
    .option("--hub-token <token>", "token used for clients that send none (default: none)")
    .option("--alias <name=org/model>", "a short name: hf/<name> (repeatable)", collect)
    .option("--backend <registry/prefix>", "a registry shared by replicas: converted models are pushed there and read back")
    .option("--index <registry/prefix>", "index artifacts (cake index push) conversions learn their units from")
    .option("--backend-plain-http", "use HTTP for the backend (and the index)")
    .option("--backend-username <user>", "backend (and index) registry user")
    .option("--backend-password <password>", "backend (and index) registry password")
    .option("--backend-password-file <file>", "a file holding the backend password (a mounted secret)")
    .option("-c, --concurrency <n>", "parallel Hub requests per conversion", parsePositiveInt)
    .option("--config <file>", "JSON config file (flags and CAKE_PROXY_* env win)")
    .option("-q, --quiet", "no logs")
    .action(async (o: Record<string, unknown> & { alias?: string[]; quiet?: boolean }) => {
      // express and the proxy load only for this command (the others start ~0.1 s faster without them).
      const { parseAliases, resolveConfig, startProxy } = await import("../../proxy/index.js");
      const cfg = resolveConfig({
        ...(o.port !== undefined ? { port: o.port as number } : {}),
        ...(o.host ? { host: String(o.host) } : {}),
        ...(o.store ? { store: String(o.store) } : {}),
        ...(o.hub ? { hub: String(o.hub) } : {}),
        ...(o.hubToken ? { hubToken: String(o.hubToken) } : {}),
        ...(o.backend ? { backend: String(o.backend) } : {}),
        ...(o.index ? { index: String(o.index) } : {}),
        ...(o.concurrency ? { concurrency: o.concurrency as number } : {}),
        ...(o.config ? { config: String(o.config) } : {}),
        ...(o.quiet ? { quiet: true } : {}),
        ...(o.backendPlainHttp ? { backendPlainHttp: true } : {}),
        ...(o.backendUsername ? { backendUsername: String(o.backendUsername) } : {}),
        ...(o.backendPassword ? { backendPassword: String(o.backendPassword) } : {}),
        ...(o.backendPasswordFile ? { backendPasswordFile: String(o.backendPasswordFile) } : {}),
        aliases: parseAliases(o.alias ?? []),
      });
      const p = await startProxy(cfg);
      process.stdout.write(`${p.url}\n`);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      await p.close();
    })
    .addCommand(warmCommand());
  return cmd;
}

/** What a proxy's answer other than 200 to a warm means, and what to do. */
function warmRefusal(status: number): string {
  if (status === 404) return "no such model or revision on the Hub (the proxy answered HTTP 404): check the name and the tag (a branch, a tag or a commit)";
  if (status === 401 || status === 403) return `no such model on the Hub, or a gated or private one (the proxy answered HTTP ${status}): check the name, or set HF_TOKEN to a token with access`;
  return `the proxy answered HTTP ${status}`;
}

/** `cake proxy warm http://host:5000/hf/org/model:rev`: convert ahead of the first client, and wait. */
function warmCommand(): Command {
  return new Command("warm")
    .description("make a running proxy convert a revision now (first pulls are then instant); waits until done")
    .argument("<url>", "[http://]host:port/hf/<org>/<model>[:<tag>]")
    .option("-q, --quiet", "say nothing")
    .action(async (url: string, _opts: unknown, cmd: Command) => {
      // `proxy warm -q`: commander hands the -q to `proxy`, which has one too.
      const opts = cmd.optsWithGlobals<{ quiet?: boolean }>();
      // `localhost:5000/hf/…` as oras and docker write it: plain HTTP, as a proxy on a laptop is.
      const full = /^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `http://${url}`;
      const m = /^(https?:\/\/[^/]+)\/(.+?)(?::([\w][\w.-]{0,127}))?$/.exec(full);
      if (!m) throw new CakeError("E_REF", `${url}: want http://host:port/hf/<org>/<model>[:<tag>]`);
      const [, base, name, tag = "main"] = m;
      const { request } = await import("undici");
      const token = tokenFromEnv()?.token;
      // The manifest request itself waits for the conversion and returns its digest.
      const res = await request(`${base}/v2/${name}/manifests/${tag}`, {
        method: "HEAD",
        headers: { accept: MT.manifest, ...(token ? { authorization: `Bearer ${token}` } : {}) },
        headersTimeout: 0,
        bodyTimeout: 0,
      }).catch((err: NodeJS.ErrnoException) => {
        throw new CakeError("E_NETWORK", `${base}: no proxy answers there (${err.code ?? err.message}): start one with cake proxy, or check the address`, { cause: err });
      });
      await res.body.dump();
      if (res.statusCode !== 200) throw new CakeError(res.statusCode === 404 ? "E_NOT_FOUND" : "E_REGISTRY", `${name}:${tag}: ${warmRefusal(res.statusCode)}`);
      say(opts, `${name}:${tag} is converted`);
      process.stdout.write(`${res.headers["docker-content-digest"]}\n`);
      await closeSharedDispatcher();
    });
}
