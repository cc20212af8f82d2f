/**
 * Range GETs to https origins reached direct go over raw TLS sockets too (src/http/range-socket.ts):
 * the bytes arrive intact, 16 at a time over kept-alive connections that resume one TLS session; an
 * answer cut mid-body is continued; a server that stalls is given up on and asked again; a
 * certificate the machine does not trust, or one for another name, fails as it fails through
 * undici. The client runs in a child process: Node reads the authorities it trusts beyond the
 * system's (NODE_EXTRA_CA_CERTS) only at start.
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import https from "node:https";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import type { TLSSocket } from "node:tls";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeCertificate } from "../registry/harness.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const DATA = randomBytes(24 << 20);
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

let dir: string;
let cert: string;
let server: https.Server;
let port: number;
/** Full TLS handshakes and resumed ones the server saw. */
let handshakes = 0;
let resumed = 0;
/** The next request's answer is cut after this many body bytes. */
let cutNextAt: number | undefined;
/** The next request's answer waits this long before its headers. */
let stallNextMs: number | undefined;

/**
 * The client: waves of ranges of https://<host>:<port>/blob, each range read as the transfer engine
 * reads it (httpRequest, pieces handed back), a wave's all at once; prints the sha256 of all the
 * bytes in order, the bodies' kinds and the most tries, or the error's message. `readAll`: each
 * range read whole by httpReadAll, which continues an answer cut short; `idleMs`: its idle timeout.
 */
const CLIENT = `
const { httpReadAll, httpRequest } = await import(${JSON.stringify(path.join(ROOT, "dist/src/http/request.js"))});
const { recycle } = await import(${JSON.stringify(path.join(ROOT, "dist/src/http/range-socket.js"))});
const { closeSharedDispatcher } = await import(${JSON.stringify(path.join(ROOT, "dist/src/http/agent.js"))});
const { createHash } = await import("node:crypto");
const [url, waves, readAll, idleMs] = JSON.parse(process.argv[1]);
const timeouts = idleMs ? { idleMs } : undefined;
const retry = { minDelayMs: 1, maxDelayMs: 5 };
try {
  const got = [];
  for (const ranges of waves) {
    got.push(...(await Promise.all(ranges.map(async ([a, b]) => {
      const headers = { range: "bytes=" + a + "-" + (b - 1) };
      if (readAll) {
        const doc = await httpReadAll(url, { headers, limit: 64 << 20, retry, timeouts });
        return { kind: "whole", tries: doc.tries, bytes: doc.bytes };
      }
      const res = await httpRequest(url, { headers, retry });
      const parts = [];
      for await (const c of res.body) { parts.push(Buffer.from(c)); recycle([c]); }
      return { kind: res.body.constructor.name, tries: res.tries, bytes: Buffer.concat(parts) };
    }))));
  }
  const h = createHash("sha256");
  for (const g of got) h.update(g.bytes);
  console.log(JSON.stringify({ sha: h.digest("hex"), kinds: [...new Set(got.map((g) => g.kind))], tries: Math.max(...got.map((g) => g.tries)) }));
} catch (err) {
  console.log(JSON.stringify({ error: err.message }));
}
await closeSharedDispatcher();
`;

type Result = { sha?: string; kinds?: string[]; tries?: number; error?: string };

type Range = [number, number];

function client(host: string, waves: Range[][], env: Record<string, string>, readAll = false, idleMs = 0): Promise<Result> {
  const url = `https://${host}:${port}/blob`;
  const childEnv = { ...process.env, ...env };
  if (!env.NODE_EXTRA_CA_CERTS) delete childEnv.NODE_EXTRA_CA_CERTS;
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ["--input-type=module", "-e", CLIENT, JSON.stringify([url, waves, readAll, idleMs])], { env: childEnv }, (err, stdout) =>
      err ? reject(err) : resolve(JSON.parse(stdout.trim().split("\n").pop()!) as Result),
    ),
  );
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "cake-tls-"));
  cert = path.join(dir, "cert.pem");
  const key = path.join(dir, "key.pem");
  makeCertificate(key, cert, "cake-test", ["DNS:localhost"]);
  server = https.createServer({ key: await fs.readFile(key), cert: await fs.readFile(cert) }, async (req, res) => {
    const stall = stallNextMs;
    stallNextMs = undefined;
    if (stall) await new Promise((r) => setTimeout(r, stall));
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
    const [a, b] = m ? [Number(m[1]), Number(m[2]) + 1] : [0, DATA.length];
    res.writeHead(m ? 206 : 200, { "content-length": b - a, "content-range": `bytes ${a}-${b - 1}/${DATA.length}` });
    const cut = cutNextAt;
    cutNextAt = undefined;
    if (cut === undefined) res.end(DATA.subarray(a, b));
    else res.write(DATA.subarray(a, a + cut), () => res.destroy());
  });
  server.on("secureConnection", (s: TLSSocket) => (s.isSessionReused() ? resumed++ : handshakes++));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await fs.rm(dir, { recursive: true, force: true });
});

const pieces = (n: number, size: number, from = 0): Range[] => Array.from({ length: n }, (_, i) => [from + i * size, from + (i + 1) * size]);

describe("Range GETs over raw TLS sockets", () => {
  it("deliver the bytes intact, 16 at a time and again over the kept-alive connections, resuming one TLS session", async () => {
    handshakes = resumed = 0;
    const step = DATA.length / 24;
    // 16 at once, then the other 8 on connections kept alive from the first wave.
    const r = await client("localhost", [pieces(16, step), pieces(8, step, 16 * step)], { NODE_EXTRA_CA_CERTS: cert });
    expect(r).toEqual({ sha: sha(DATA), kinds: ["SocketBody"], tries: 1 });
    expect(handshakes + resumed).toBe(16);
  });

  it("later connections to the origin resume its TLS session instead of a full handshake", async () => {
    handshakes = resumed = 0;
    // One request first (its session is kept), then 8 at once: 7 of them on new connections.
    const r = await client("localhost", [[[0, 1000]], pieces(8, 1000, 1000)], { NODE_EXTRA_CA_CERTS: cert });
    expect(r.sha).toBe(sha(DATA.subarray(0, 9000)));
    expect({ handshakes, resumed }).toEqual({ handshakes: 1, resumed: 7 });
  });

  it("an answer cut mid-body is asked again and continued", async () => {
    cutNextAt = 300_000;
    const r = await client("localhost", [[[1000, 2_000_000]]], { NODE_EXTRA_CA_CERTS: cert }, true);
    expect(r).toEqual({ sha: sha(DATA.subarray(1000, 2_000_000)), kinds: ["whole"], tries: 2 });
  });

  it("a server that stalls before the headers ends the try as undici's timeout does, and the next try gets the bytes", async () => {
    stallNextMs = 1000;
    const r = await client("localhost", [[[0, 500_000]]], { NODE_EXTRA_CA_CERTS: cert }, true, 200);
    expect(r).toEqual({ sha: sha(DATA.subarray(0, 500_000)), kinds: ["whole"], tries: 2 });
  });

  it("a certificate the machine does not trust, or for another name, fails as it fails through undici", async () => {
    const untrusted = await client("localhost", [[[0, 10]]], {});
    expect(untrusted.error).toMatch(/self-signed certificate/);
    expect(await client("localhost", [[[0, 10]]], { CAKE_HTTP_SOCKETS: "0" })).toEqual(untrusted);
    const otherName = await client("127.0.0.1", [[[0, 10]]], { NODE_EXTRA_CA_CERTS: cert });
    expect(otherName.error).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list/);
    expect(await client("127.0.0.1", [[[0, 10]]], { NODE_EXTRA_CA_CERTS: cert, CAKE_HTTP_SOCKETS: "0" })).toEqual(otherName);
  });
});
