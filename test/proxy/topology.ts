/**
 * The scale-out topology on loopback, for tests: an S3-compatible server (moto), CNCF distribution
 * with its s3 storage driver on a bucket there (the backend replicas share), `cake proxy` replicas as
 * processes, and haproxy round-robin in front. Each piece fails the test (never skips) when its tool
 * is missing, and has close().
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { connect, createServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CAKE, waitFor } from "../helpers/cli.js";
import { distributionConfig, freePort, requireTool } from "../registry/harness.js";

const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

interface Daemon {
  child: ChildProcess;
  exited: () => boolean;
  /** SIGTERM, SIGKILL after 5 s; resolves once it is gone. */
  stop(): Promise<void>;
}

function daemon(bin: string, args: string[], logPath: string, env: NodeJS.ProcessEnv = process.env): Daemon {
  const logFd = openSync(logPath, "a");
  const child = spawn(bin, args, { stdio: ["ignore", logFd, logFd], env });
  closeSync(logFd);
  children.add(child);
  let exited = false;
  const gone = new Promise<void>((resolve) =>
    child.once("exit", () => {
      exited = true;
      children.delete(child);
      resolve();
    }),
  );
  return {
    child,
    exited: () => exited,
    async stop() {
      if (exited) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await gone;
      clearTimeout(timer);
    },
  };
}

/** The HTTP status of a request, or 0 when nothing answered. */
function statusOf(url: string, method = "GET"): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest(url, { method }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", () => resolve(0));
    req.end();
  });
}

async function waitForStatus(url: string, ok: (status: number) => boolean, d: Daemon, what: string, logPath: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline && !d.exited()) {
    if (ok(await statusOf(url))) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  await d.stop();
  throw new Error(`${what} did not start (${url}): ${readFileSync(logPath, "utf8").split("\n").slice(-8).join("\n")}`);
}

export interface S3Registry {
  /** `127.0.0.1:PORT` of distribution. */
  host: string;
  /** moto's endpoint, `http://127.0.0.1:PORT`. */
  s3: string;
  bucket: string;
  /** distribution's log. */
  logPath: string;
  /** Stops distribution (moto and the bucket stay). */
  stop(): Promise<void>;
  /** Starts distribution again on the same port, over the same bucket. */
  start(): Promise<void>;
  close(): Promise<void>;
}

/** moto on a free port, a bucket there, and distribution storing into it with its s3 driver. */
export async function startS3Registry(): Promise<S3Registry> {
  const motoBin = requireTool("moto_server");
  const registryBin = requireTool("docker-registry");
  const dir = mkdtempSync(join(tmpdir(), "cake-s3registry-"));
  const motoLog = join(dir, "moto.log");
  const logPath = join(dir, "registry.log");
  const bucket = "cake-backend";
  let moto: Daemon | undefined;
  let registry: Daemon | undefined;
  try {
    const motoPort = await freePort();
    const s3 = `http://127.0.0.1:${motoPort}`;
    moto = daemon(motoBin, ["-H", "127.0.0.1", "-p", String(motoPort)], motoLog);
    await waitForStatus(`${s3}/`, (s) => s === 200, moto, "moto_server", motoLog);
    const made = await statusOf(`${s3}/${bucket}`, "PUT");
    if (made !== 200) throw new Error(`moto_server at ${s3}: creating bucket ${bucket} answered HTTP ${made}`);

    const host = `127.0.0.1:${await freePort()}`;
    const configPath = join(dir, "config.yml");
    const s3Driver = [
      "  s3:",
      "    accesskey: cake-test",
      "    secretkey: cake-test-secret",
      "    region: us-east-1",
      `    regionendpoint: ${s3}`,
      `    bucket: ${bucket}`,
      "    secure: false",
      "    v4auth: true",
      "    rootdirectory: /registry",
    ];
    writeFileSync(configPath, distributionConfig(s3Driver, host));
    // The s3 driver refuses to start while AWS_CA_BUNDLE names a bundle it cannot load, and moto is plain HTTP.
    const { AWS_CA_BUNDLE: _unused, ...env } = process.env;
    const start = async () => {
      registry = daemon(registryBin, ["serve", configPath], logPath, env);
      await waitForStatus(`http://${host}/v2/`, (s) => s === 200, registry, "docker-registry (s3 storage)", logPath);
    };
    await start();
    const m = moto;
    return {
      host,
      s3,
      bucket,
      logPath,
      stop: async () => registry?.stop(),
      start,
      async close() {
        await registry?.stop();
        await m.stop();
        if (!process.env.CAKE_KEEP_REGISTRY) rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await registry?.stop();
    await moto?.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

export interface Replica {
  /** `127.0.0.1:PORT` */
  host: string;
  child: ChildProcess;
  /** Its JSON log lines so far (stderr). */
  log(): string;
}

export interface Replicas {
  replicas: Replica[];
  close(): Promise<void>;
}

/**
 * `n` `cake proxy` processes, each with a store of its own under `storeRoot`, sharing `backend`
 * (`host/prefix`, plain HTTP).
 */
export async function startReplicas(n: number, opts: { hub: string; backend: string; storeRoot: string; env?: Record<string, string> }): Promise<Replicas> {
  const replicas: Replica[] = [];
  const close = async () => {
    await Promise.all(
      replicas.map(
        (r) =>
          new Promise<void>((resolve) => {
            if (r.child.exitCode !== null || r.child.signalCode !== null) return resolve();
            r.child.once("exit", () => resolve());
            r.child.kill("SIGTERM");
            setTimeout(() => r.child.kill("SIGKILL"), 5_000).unref();
          }),
      ),
    );
  };
  try {
    await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const args = ["proxy", "--port", "0", "--hub", opts.hub, "--store", join(opts.storeRoot, `replica-${i}`), "--backend", opts.backend, "--backend-plain-http"];
        const child = spawn(process.execPath, [CAKE, ...args], { env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
        children.add(child);
        child.once("exit", () => children.delete(child));
        let out = "";
        let log = "";
        child.stdout!.on("data", (d) => (out += d));
        child.stderr!.on("data", (d) => (log += d));
        replicas[i] = { host: "", child, log: () => log };
        await waitFor(() => /^http:\/\/\S+\n/.test(out) || child.exitCode !== null, 20_000, `cake proxy replica ${i} to listen`);
        const m = /^http:\/\/(\S+)\n/.exec(out);
        if (!m) throw new Error(`cake proxy replica ${i} exited (${child.exitCode}): ${log}`);
        replicas[i]!.host = m[1]!;
      }),
    );
  } catch (err) {
    await close();
    throw err;
  }
  return { replicas, close };
}

export interface Haproxy {
  /** `127.0.0.1:PORT` */
  host: string;
  logPath: string;
  close(): Promise<void>;
}

/**
 * haproxy round-robin over `servers` (`host:port`), checking each with `GET /v2/`. A request whose
 * server refuses or drops the connection is sent again, to another server (`retries`, `redispatch`).
 */
export async function startHaproxy(servers: string[]): Promise<Haproxy> {
  const bin = requireTool("haproxy");
  const dir = mkdtempSync(join(tmpdir(), "cake-haproxy-"));
  const logPath = join(dir, "haproxy.log");
  try {
    const host = `127.0.0.1:${await freePort()}`;
    const configPath = join(dir, "haproxy.cfg");
    writeFileSync(
      configPath,
      [
        "defaults",
        "  mode http",
        "  timeout connect 2s",
        "  timeout client 60s",
        "  timeout server 60s",
        "  retries 3",
        "  option redispatch 1",
        "  retry-on conn-failure empty-response",
        "frontend cake",
        `  bind ${host}`,
        "  default_backend replicas",
        "backend replicas",
        "  balance roundrobin",
        "  option httpchk GET /v2/",
        ...servers.map((s, i) => `  server replica-${i} ${s} check inter 500 fall 1 rise 1`),
        "",
      ].join("\n"),
    );
    const d = daemon(bin, ["-db", "-f", configPath], logPath);
    await waitForStatus(`http://${host}/v2/`, (s) => s === 200, d, "haproxy", logPath);
    return {
      host,
      logPath,
      async close() {
        await d.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

export interface Relay {
  /** `127.0.0.1:PORT` */
  host: string;
  /** Connections open now, each with the bytes it has carried back to the client so far. */
  open: Set<{ down: number; end(): void }>;
}

export interface Relays {
  relays: Relay[];
  /** Each connection's answers flow back at most this many bytes a second (0: unthrottled). */
  setRate(bytesPerSecond: number): void;
  close(): Promise<void>;
}

/**
 * A TCP relay in front of each of `targets` (`host:port`), for a balancer to use instead: answers
 * can be slowed per connection (so a test can act in the middle of a download), and what each relay
 * carries is counted. A relay whose target is gone closes the client's connection.
 */
export async function startRelays(targets: string[]): Promise<Relays> {
  let rate = 0;
  const servers: Server[] = [];
  const relays = await Promise.all(
    targets.map(async (target) => {
      const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
      const open = new Set<{ down: number; end(): void }>();
      const server = createServer((client) => {
        const upstream = connect(port, host);
        const end = () => {
          open.delete(conn);
          client.destroy();
          upstream.destroy();
        };
        const conn = { down: 0, end };
        open.add(conn);
        client.on("error", end).on("close", end);
        upstream.on("error", end).on("close", end);
        client.pipe(upstream);
        upstream.on("data", (chunk: Buffer) => {
          conn.down += chunk.length;
          client.write(chunk);
          if (rate > 0) {
            upstream.pause();
            setTimeout(() => upstream.resume(), (chunk.length / rate) * 1000);
          }
        });
      });
      servers.push(server);
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      return { host: `127.0.0.1:${(server.address() as AddressInfo).port}`, open };
    }),
  );
  return {
    relays,
    setRate: (r) => void (rate = r),
    close: async () => {
      for (const r of relays) for (const c of [...r.open]) c.end();
      await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    },
  };
}
