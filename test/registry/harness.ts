/**
 * Real registries for tests: CNCF distribution (`docker-registry`, 2.8) on a free loopback port
 * with its storage in a temp dir, optionally behind htpasswd (bcrypt) or token auth. For token
 * auth the harness runs its own token server (node http on 127.0.0.1) that checks basic
 * credentials (or a refresh token) and signs RS256 JWTs with a key whose self-signed certificate
 * (made by the `openssl` CLI) is the registry's `rootcertbundle`; the certificate goes in the JWT
 * header `x5c`, which distribution 2.8 verifies against that bundle
 * (registry/auth/token/token.go, parseAndVerifyCertChain).
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { X509Certificate, createPrivateKey, randomBytes, sign, type KeyObject } from "node:crypto";
import { accessSync, constants, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request as httpRequest, type IncomingMessage, type Server } from "node:http";
import { request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import { homedir, tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { cutAnswer, type CutPlan } from "../helpers/cut-answer.js";

export type Tool = "oras" | "crane" | "skopeo" | "docker-registry" | "htpasswd" | "openssl" | "squid" | "haproxy" | "moto_server" | "zstd";

/**
 * The absolute path of a test tool: `~/go/bin`, `$GOPATH/bin`, `$PATH`, then `/usr/sbin`. Throws (the test
 * fails, it never skips) when the tool is missing.
 */
export function requireTool(name: Tool): string {
  const dirs = [
    join(homedir(), "go", "bin"),
    ...(process.env.GOPATH ?? "").split(delimiter).filter(Boolean).map((p) => join(p, "bin")),
    ...(process.env.PATH ?? "").split(delimiter).filter(Boolean),
    "/usr/sbin", // squid and haproxy, for a user whose PATH lacks it
  ];
  for (const dir of dirs) {
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  throw new Error(
    `${name} is required by the tests but was not found in ${dirs.join(", ")}; ` +
      `install the test tools with the setup step of .ci/run`,
  );
}

/**
 * A self-signed certificate for `names` (subjectAltName entries: `IP:127.0.0.1`, `DNS:localhost`),
 * with its key, made by openssl (throws when openssl is missing or fails).
 */
export function makeCertificate(keyPath: string, certPath: string, commonName: string, names: string[]): void {
  execFileSync(
    requireTool("openssl"),
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2", "-subj", `/CN=${commonName}`, "-addext", `subjectAltName=${names.join(",")}`, "-keyout", keyPath, "-out", certPath],
    { stdio: "ignore" },
  );
}

/** A port nobody listens on right now (127.0.0.1). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export interface TokenRequestRecord {
  method: string;
  user: string | undefined;
  scopes: string[];
  grant: "basic" | "refresh_token" | "password" | "anonymous";
  status: number;
}

export interface TokenServer {
  /** The realm the registry's challenge names. */
  realm: string;
  service: string;
  issuer: string;
  /** Every token request, in order. */
  requests: TokenRequestRecord[];
  /** `expires_in` the server reports (seconds): what the client caches by. Mutable. */
  expiresIn: number;
  /**
   * How long the registry accepts a token (seconds, from issue): the JWT `exp` is set this long
   * minus distribution's 60 s leeway, so 1 means "refused about a second after issue". Mutable.
   */
  validFor: number;
  /** A refresh token (docker's `identitytoken`) accepted for the user. */
  refreshToken: string;
  /** Cuts the `n`th token answer (1-based) where it returns a plan (test/helpers/cut-answer.ts). Mutable. */
  cut?: (n: number) => CutPlan | undefined;
  close(): Promise<void>;
}

export interface RunningRegistry {
  /** `127.0.0.1:PORT` */
  host: string;
  /** `http://127.0.0.1:PORT` (`https://` with `tls`) */
  url: string;
  /** With `tls`: the registry's self-signed certificate, for NODE_EXTRA_CA_CERTS. */
  certPath?: string;
  storageDir: string;
  /** distribution's log, access log included. */
  logPath: string;
  close(): Promise<void>;
}

export interface StartRegistryOptions {
  /** Basic auth with one bcrypt user (or, with `token`, the user the token server knows). */
  htpasswd?: { user: string; password: string };
  /** Token auth through the harness's token server. */
  token?: boolean | { expiresIn?: number; validFor?: number };
  /** HTTPS with a self-signed certificate (made by `openssl`) for 127.0.0.1, localhost and these names. */
  tls?: { names?: string[] };
}

const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

/** Starts distribution and resolves once `/v2/` answers. */
export async function startRegistry(opts: StartRegistryOptions = {}): Promise<RunningRegistry & { tokenServer?: TokenServer }> {
  const bin = requireTool("docker-registry");
  const dir = mkdtempSync(join(tmpdir(), "cake-registry-"));
  const storageDir = join(dir, "storage");
  const logPath = join(dir, "registry.log");
  let tokenServer: TokenServer | undefined;
  let auth = "";
  try {
    if (opts.token) {
      const user = opts.htpasswd ?? { user: "cake", password: "cake-secret" };
      const knobs = typeof opts.token === "object" ? opts.token : {};
      tokenServer = await startTokenServer(dir, user, knobs);
      auth = [
        "auth:",
        "  token:",
        `    realm: ${tokenServer.realm}`,
        `    service: ${tokenServer.service}`,
        `    issuer: ${tokenServer.issuer}`,
        `    rootcertbundle: ${join(dir, "token-cert.pem")}`,
      ].join("\n");
    } else if (opts.htpasswd) {
      const line = execFileSync(requireTool("htpasswd"), ["-Bbn", opts.htpasswd.user, opts.htpasswd.password], {
        encoding: "utf8",
      });
      writeFileSync(join(dir, "htpasswd"), line.trim() + "\n");
      auth = ["auth:", "  htpasswd:", "    realm: cake-test", `    path: ${join(dir, "htpasswd")}`].join("\n");
    }

    let tls = "";
    const certPath = join(dir, "tls-cert.pem");
    if (opts.tls) {
      const keyPath = join(dir, "tls-key.pem");
      makeCertificate(keyPath, certPath, "cake-test-registry", ["IP:127.0.0.1", "DNS:localhost", ...(opts.tls.names ?? []).map((n) => `DNS:${n}`)]);
      tls = ["  tls:", `    certificate: ${certPath}`, `    key: ${keyPath}`].join("\n");
    }
    const scheme = opts.tls ? "https" : "http";

    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const host = `127.0.0.1:${port}`;
      const config = distributionConfig(["  filesystem:", `    rootdirectory: ${storageDir}`], host, [tls, auth]);
      const configPath = join(dir, "config.yml");
      writeFileSync(configPath, config);
      const logFd = openSync(logPath, "a");
      const child = spawn(bin, ["serve", configPath], { stdio: ["ignore", logFd, logFd] });
      closeSync(logFd);
      children.add(child);
      let exited = false;
      child.once("exit", () => {
        exited = true;
        children.delete(child);
      });
      const up = await waitUntilUp(`${scheme}://${host}/v2/`, () => exited, 20_000, opts.tls ? readFileSync(certPath) : undefined);
      if (!up) {
        child.kill("SIGKILL");
        const log = readFileSync(logPath, "utf8");
        if (attempt < 3 && /address already in use/.test(log)) continue;
        throw new Error(`docker-registry did not start on ${host}: ${log.split("\n").slice(-8).join("\n")}`);
      }
      const ts = tokenServer;
      return {
        host,
        url: `${scheme}://${host}`,
        ...(opts.tls ? { certPath } : {}),
        storageDir,
        logPath,
        tokenServer: ts,
        async close() {
          if (!exited) {
            const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
            child.kill("SIGTERM");
            const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
            await gone;
            clearTimeout(timer);
          }
          await ts?.close();
          if (!process.env.CAKE_KEEP_REGISTRY) rmSync(dir, { recursive: true, force: true });
        },
      };
    }
  } catch (err) {
    await tokenServer?.close();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * distribution's config.yml: the `storage` driver's lines (indented under `storage:`), deletes on,
 * no upload purging, the access log on, listening on `host`; `http` lines (tls) and `auth` after.
 */
export function distributionConfig(storage: string[], host: string, extra: string[] = []): string {
  return [
    "version: 0.1",
    "log:",
    "  level: info",
    "  formatter: text",
    "  accesslog:",
    "    disabled: false",
    "storage:",
    ...storage,
    "  delete:",
    "    enabled: true",
    "  maintenance:",
    "    uploadpurging:",
    "      enabled: false",
    "http:",
    `  addr: ${host}`,
    `  secret: ${randomBytes(16).toString("hex")}`,
    ...extra,
    "",
  ].join("\n");
}

async function waitUntilUp(url: string, exited: () => boolean, timeoutMs: number, ca?: Buffer): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !exited()) {
    const ok = await new Promise<boolean>((resolve) => {
      const req = (ca ? httpsRequest : httpRequest)(url, ca ? { ca } : {}, (res) => {
        res.resume();
        resolve(res.statusCode === 200 || res.statusCode === 401);
      });
      req.on("error", () => resolve(false));
      req.end();
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// token server

async function startTokenServer(
  dir: string,
  account: { user: string; password: string },
  knobs: { expiresIn?: number; validFor?: number },
): Promise<TokenServer> {
  const keyPath = join(dir, "token-key.pem");
  const certPath = join(dir, "token-cert.pem");
  execFileSync(
    requireTool("openssl"),
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2", "-subj", "/CN=cake-test-token-issuer", "-keyout", keyPath, "-out", certPath],
    { stdio: "ignore" },
  );
  const key: KeyObject = createPrivateKey(readFileSync(keyPath));
  const certDer = new X509Certificate(readFileSync(certPath)).raw.toString("base64");
  const service = "cake-test-registry";
  const issuer = "cake-test-issuer";
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;

  const ts: TokenServer = {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    requests: [],
    expiresIn: knobs.expiresIn ?? 300,
    validFor: knobs.validFor ?? 3600,
    refreshToken: `refresh-${randomBytes(12).toString("hex")}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };

  const mint = (user: string | undefined, scopes: string[]) => {
    const now = Math.floor(Date.now() / 1000);
    const access = user
      ? scopes.flatMap((s) => {
          const m = /^([a-z]+):(.+):([a-z,*]+)$/.exec(s);
          if (!m) return [];
          const granted = m[3]!.split(",").filter((a) => a === "pull" || a === "push" || a === "delete");
          return [{ type: m[1], name: m[2], actions: granted }];
        })
      : [];
    const b64u = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const head = b64u({ typ: "JWT", alg: "RS256", x5c: [certDer] });
    const claims = b64u({
      iss: issuer,
      sub: user ?? "",
      aud: service,
      exp: now + ts.validFor - 60, // distribution 2.8 accepts a token until exp + 60 s
      nbf: now,
      iat: now,
      jti: randomBytes(8).toString("hex"),
      access,
    });
    const sig = sign("sha256", Buffer.from(`${head}.${claims}`), key).toString("base64url");
    return `${head}.${claims}.${sig}`;
  };

  server.on("request", (req: IncomingMessage, res) => {
    const plan = ts.cut?.(ts.requests.length + 1);
    if (plan) cutAnswer(res, plan);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", ts.realm);
      const record: TokenRequestRecord = { method: req.method ?? "GET", user: undefined, scopes: [], grant: "anonymous", status: 200 };
      ts.requests.push(record);
      const deny = (status: number, message: string) => {
        record.status = status;
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message }] }));
      };
      if (url.pathname !== "/token") return deny(404, "no such endpoint");
      let params: URLSearchParams = url.searchParams;
      if (req.method === "POST") params = new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
      if (params.get("service") !== service) return deny(400, `unknown service ${params.get("service")}`);
      record.scopes = req.method === "POST" ? (params.get("scope") ?? "").split(" ").filter(Boolean) : params.getAll("scope");

      const basic = /^Basic (.+)$/i.exec(req.headers.authorization ?? "");
      if (req.method === "POST") {
        const grant = params.get("grant_type");
        if (grant === "refresh_token") {
          record.grant = "refresh_token";
          if (params.get("refresh_token") !== ts.refreshToken) return deny(401, "invalid refresh token");
          record.user = account.user;
        } else if (grant === "password") {
          record.grant = "password";
          if (params.get("username") !== account.user || params.get("password") !== account.password) {
            return deny(401, "invalid username or password");
          }
          record.user = account.user;
        } else {
          return deny(400, `unsupported grant_type ${grant}`);
        }
      } else if (basic) {
        record.grant = "basic";
        const [user, ...rest] = Buffer.from(basic[1]!, "base64").toString("utf8").split(":");
        if (user !== account.user || rest.join(":") !== account.password) return deny(401, "invalid username or password");
        record.user = user;
      }
      const token = mint(record.user, record.scopes);
      res.writeHead(200, { "content-type": "application/json" });
      const body: Record<string, unknown> = { token, expires_in: ts.expiresIn, issued_at: new Date().toISOString() };
      if (req.method === "POST") body.access_token = token;
      res.end(JSON.stringify(body));
    });
  });
  return ts;
}
