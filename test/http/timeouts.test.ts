/**
 * A stalled peer: a registry or Hub that trickles its answer (a byte at a time, never done) or never
 * finishes its headers. The built CLI gives up within a bounded time, saying which URL stalled and
 * which knob to raise, instead of waiting forever (CAKE_HTTP_TIMEOUT, CAKE_HTTP_IDLE_TIMEOUT; small
 * values here so the tests run in seconds).
 */
import fs from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cake } from "../helpers/cli.js";

let tmp: string;
/** Answers every request at once with headers, then its body one byte every 200 ms, never ending. */
let trickle: Server;
let trickleUrl: string;
/** Accepts connections and sends the start of a status line, never the rest. */
let mute: TcpServer;
let muteUrl: string;
const timers = new Set<NodeJS.Timeout>();
const sockets = new Set<Socket>();
/** Requests each server got (every try is a new request). */
const asked = { trickle: 0, mute: 0 };

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-stall-"));
  trickle = createServer((_req, res) => {
    asked.trickle++;
    res.writeHead(200, { "content-type": "application/json", "content-length": "100000", "docker-distribution-api-version": "registry/2.0" });
    const t = setInterval(() => res.write("["), 200);
    timers.add(t);
    res.on("close", () => clearInterval(t));
  });
  trickle.on("connection", (s) => sockets.add(s));
  await new Promise<void>((r) => trickle.listen(0, "127.0.0.1", r));
  trickleUrl = `127.0.0.1:${(trickle.address() as AddressInfo).port}`;
  mute = createTcpServer((s) => {
    sockets.add(s);
    s.once("data", () => {
      asked.mute++;
      s.write("HTTP/1.1 200 OK\r\n");
    });
    s.on("error", () => undefined);
  });
  await new Promise<void>((r) => mute.listen(0, "127.0.0.1", r));
  muteUrl = `127.0.0.1:${(mute.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const t of timers) clearInterval(t);
  for (const s of sockets) s.destroy();
  await new Promise((r) => trickle?.close(r));
  await new Promise((r) => mute?.close(r));
  await fs.rm(tmp, { recursive: true, force: true });
});

let n = 0;
const env = (extra: Record<string, string> = {}) => ({
  CAKE_HOME: path.join(tmp, `store-${n++}`),
  HF_HOME: path.join(tmp, "hf"),
  HF_TOKEN: "",
  CAKE_HTTP_TIMEOUT: "1",
  CAKE_HTTP_IDLE_TIMEOUT: "1",
  ...extra,
});

describe("a peer that stalls", () => {
  it("a registry trickling a manifest a byte at a time: the pull ends after 3 tries, naming the URL and CAKE_HTTP_TIMEOUT", async () => {
    asked.trickle = 0;
    const r = await cake(["pull", "-q", `${trickleUrl}/acme/m:v1`], env());
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain(`http://${trickleUrl}/v2/`);
    expect(r.stderr).toMatch(/not done within 1 s \(CAKE_HTTP_TIMEOUT\).*\(3 tries\)/);
    expect(asked.trickle).toBe(3);
  }, 30_000);

  it("a Hub trickling its model info: the pull ends the same way", async () => {
    const r = await cake(["pull", "-q", "hf://acme/m"], env({ HF_ENDPOINT: `http://${trickleUrl}` }));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`http://${trickleUrl}/api/models/acme/m`);
    expect(r.stderr).toMatch(/not done within 1 s \(CAKE_HTTP_TIMEOUT\).*\(3 tries\)/);
  }, 30_000);

  it("headers that never finish: the pull ends after 3 tries of CAKE_HTTP_IDLE_TIMEOUT, not 7 of 60 s", async () => {
    asked.mute = 0;
    const r = await cake(["pull", "-q", `${muteUrl}/acme/m:v1`], env({ CAKE_HTTP_TIMEOUT: "0" }));
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain(`http://${muteUrl}/v2/`);
    expect(r.stderr).toMatch(/no byte for 1 s \(CAKE_HTTP_IDLE_TIMEOUT\).*\(3 tries\)/);
    expect(asked.mute).toBe(3);
  }, 30_000);
});

describe("a blob body that trickles", () => {
  it("ends each try once it brings less than 16 KiB in an idle timeout's time, and fails after 3 such tries", async () => {
    // A registry whose manifest is fine and whose one blob comes 10 bytes every 100 ms: never idle, never done.
    const blob = Buffer.alloc(1 << 20, 7);
    const digest = `sha256:${(await import("node:crypto")).createHash("sha256").update(blob).digest("hex")}`;
    const config = Buffer.from("{}");
    const configDigest = `sha256:${(await import("node:crypto")).createHash("sha256").update(config).digest("hex")}`;
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.empty.v1+json", digest: configDigest, size: config.length },
      layers: [{ mediaType: "application/octet-stream", digest, size: blob.length }],
    });
    let blobTries = 0;
    const reg = createServer((req, res) => {
      const url = req.url ?? "";
      if (url === "/v2/" || url.includes("/manifests/")) {
        const body = url === "/v2/" ? "{}" : manifest;
        res.writeHead(200, { "content-type": url === "/v2/" ? "application/json" : "application/vnd.oci.image.manifest.v1+json", "content-length": String(body.length), "docker-distribution-api-version": "registry/2.0" });
        return void res.end(body);
      }
      if (url.endsWith(configDigest)) return void res.writeHead(200, { "content-length": String(config.length) }).end(config);
      blobTries++;
      res.writeHead(200, { "content-length": String(blob.length) });
      let at = 0;
      const t = setInterval(() => {
        res.write(blob.subarray(at, at + 10));
        at += 10;
      }, 100);
      timers.add(t);
      res.on("close", () => clearInterval(t));
    });
    reg.on("connection", (s) => sockets.add(s));
    await new Promise<void>((r) => reg.listen(0, "127.0.0.1", r));
    const host = `127.0.0.1:${(reg.address() as AddressInfo).port}`;
    try {
      const r = await cake(["pull", "-q", `${host}/acme/m:v1`], env({ CAKE_HTTP_TIMEOUT: "0" }));
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(new RegExp(`blob ${digest}: less than 16\\.0 KiB in 1 s \\(CAKE_HTTP_IDLE_TIMEOUT\\) after [\\d.]+ B of 1\\.0 MiB \\(3 tries\\)`));
      expect(blobTries).toBe(3);
    } finally {
      await new Promise((r) => reg.close(r));
    }
  }, 30_000);
});
