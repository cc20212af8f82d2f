/**
 * A real forward proxy for tests: squid on a free loopback port, with a config written here. Its
 * access log shows every request that went through it (`GET http://…` forwarded, `CONNECT host:port`
 * tunnelled). `hosts` are names only the proxy resolves (squid's `hosts_file`): a client can reach
 * such a host through the proxy and no other way, as behind a corporate proxy. DNS goes to
 * 127.0.0.1, where nothing answers, so the proxy never reaches beyond loopback.
 *
 * squid rather than tinyproxy: tinyproxy resolves names with the system's resolver, so an HTTPS
 * registry on loopback could only be named `127.0.0.1` or `localhost`, which cake speaks plain HTTP
 * to (as docker does).
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, requireTool } from "../registry/harness.js";

export interface Squid {
  /** `http://127.0.0.1:PORT` */
  url: string;
  port: number;
  /** The access log's requests so far, each as `METHOD URL STATUS` (`CONNECT host:port 200`). */
  requests(): string[];
  close(): Promise<void>;
}

export interface SquidOptions {
  /** Host names the proxy resolves, to addresses. */
  hosts?: Record<string, string>;
  /** Ports CONNECT may open (the TLS registry's); others are refused. */
  connectPorts?: number[];
  /** Basic credentials the proxy asks for (407 without them). */
  auth?: { user: string; password: string };
}

const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

export async function startSquid(opts: SquidOptions = {}): Promise<Squid> {
  const bin = requireTool("squid");
  const dir = mkdtempSync(join(tmpdir(), "cake-squid-"));
  // squid started as root drops to its own user, which writes the logs here.
  chmodSync(dir, 0o777);
  const accessLog = join(dir, "access.log");
  const hostsFile = join(dir, "hosts");
  writeFileSync(hostsFile, Object.entries(opts.hosts ?? {}).map(([name, addr]) => `${addr} ${name}\n`).join(""));
  let authLines: string[] = [];
  if (opts.auth) {
    const passwd = join(dir, "passwd");
    execFileSync(requireTool("htpasswd"), ["-bc", passwd, opts.auth.user, opts.auth.password], { stdio: "ignore" });
    authLines = [
      `auth_param basic program ${join(bin, "..", "..", "lib", "squid", "basic_ncsa_auth")} ${passwd}`,
      "auth_param basic realm cake-test",
      "acl users proxy_auth REQUIRED",
      "http_access deny !users",
    ];
  }
  const port = await freePort();
  const config = [
    `http_port 127.0.0.1:${port}`,
    "visible_hostname cake-test-proxy",
    "pid_filename none",
    "pinger_enable off",
    "cache deny all",
    "cache_mem 8 MB",
    "logformat cake %rm %ru %>Hs",
    `access_log stdio:${accessLog} logformat=cake`,
    `cache_log ${join(dir, "cache.log")}`,
    "cache_store_log none",
    "logfile_rotate 0",
    `hosts_file ${hostsFile}`,
    "dns_nameservers 127.0.0.1",
    "shutdown_lifetime 0 seconds",
    "acl local src 127.0.0.1",
    `acl tls_ports port ${(opts.connectPorts ?? [443]).join(" ")}`,
    "http_access deny CONNECT !tls_ports",
    ...authLines,
    "http_access allow local",
    "http_access deny all",
    "",
  ].join("\n");
  const configPath = join(dir, "squid.conf");
  writeFileSync(configPath, config);
  const child = spawn(bin, ["-N", "-f", configPath], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  children.add(child);
  let exited = false;
  child.once("exit", () => {
    exited = true;
    children.delete(child);
  });
  const deadline = Date.now() + 20_000;
  while (!(await listening(port))) {
    if (exited || Date.now() > deadline) {
      child.kill("SIGKILL");
      const log = readIfThere(join(dir, "cache.log")) ?? stderr;
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`squid did not start on 127.0.0.1:${port}: ${log.split("\n").slice(-8).join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    // "- error:…" lines are the start-up probe's connections, not requests.
    requests: () => (readIfThere(accessLog) ?? "").split("\n").filter((l) => l && !l.startsWith("- ")),
    async close() {
      // Nothing to save (the access log is written as requests end), and a graceful stop waits
      // for the auth helper: killed. Its helpers exit when their input closes.
      if (!exited) {
        const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
        child.kill("SIGKILL");
        await gone;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function readIfThere(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect(port, "127.0.0.1", () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
