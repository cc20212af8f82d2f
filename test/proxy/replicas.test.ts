/**
 * Replicas of `cake proxy` behind a round-robin balancer, sharing one backend registry (a real CNCF
 * distribution): any replica serves any request, a revision is converted once, and the first client
 * is answered before the backend upload lands.
 */
import { createHash } from "node:crypto";
import { createServer, request as forward, type Server } from "node:http";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { request as httpGet } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startProxy, type RunningProxy } from "../../proxy/index.js";
import { dirBytes, hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake, waitFor } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { startCountingProxy, type CountingProxy } from "../registry/counting-proxy.js";
import { startRegistry, type RunningRegistry } from "../registry/harness.js";

const OCI = "application/vnd.oci.image.manifest.v1+json";
let tmp: string;
let model: string;
/** A model of more blobs, for the takeover after a push cut short. */
let bigger: string;
let hub: Hub;
let reg: RunningRegistry;
let front: CountingProxy;
let commits: Record<string, string>;
const running: RunningProxy[] = [];

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-replicas-"));
  model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 128, layers: 1, vocab: 512, shards: 1 });
  hub = await startHub();
  commits = {};
  for (const name of ["split", "stranger", "slow-push", "cold", "balanced", "instant", "mpsplit"]) {
    hub.addRepo(`acme/${name}`);
    commits[name] = await hub.commit(`acme/${name}`, model);
  }
  bigger = path.join(tmp, "bigger");
  await makeLlamaLike(bigger, { hidden: 256, layers: 4, vocab: 2048, shards: 2 });
  for (const name of ["resume", "stopped"]) {
    hub.addRepo(`acme/${name}`);
    commits[name] = await hub.commit(`acme/${name}`, bigger);
  }
  reg = await startRegistry();
  front = await startCountingProxy(reg.url);
});
afterEach(async () => {
  for (const p of running.splice(0)) {
    await p.service.backendSettled();
    await p.close();
  }
  front.reset();
  hub.setKnobs({ bandwidth: 0 });
});
afterAll(async () => {
  await front?.close();
  await reg?.close();
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

async function replica(name: string): Promise<RunningProxy> {
  const p = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, name), aliases: {}, quiet: true, backend: `${front.host}/cache` });
  running.push(p);
  return p;
}

async function get(url: string): Promise<{ status: number; digest?: string; body: Buffer }> {
  const r = await httpGet(url, { headers: { accept: OCI } });
  const body = Buffer.from(await r.body.arrayBuffer());
  const digest = r.headers["docker-content-digest"];
  return { status: r.statusCode, body, ...(typeof digest === "string" ? { digest } : {}) };
}

const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
type Manifest = { config: { digest: string }; layers: { digest: string; size: number }[] };

/** Whether the backend holds `acme/<name>` converted (its commit tag), asked of the registry itself. */
async function inBackend(name: string): Promise<boolean> {
  const r = await httpGet(`${reg.url}/v2/cache/acme/${name}/manifests/${commits[name]}`, { method: "HEAD", headers: { accept: OCI } });
  await r.body.dump();
  return r.statusCode === 200;
}

/** A round-robin load balancer: each request goes to the next replica in turn. */
async function roundRobin(replicas: RunningProxy[]): Promise<{ host: string; close(): Promise<void> }> {
  let next = 0;
  const server: Server = createServer((req, res) => {
    const to = new URL(replicas[next++ % replicas.length]!.url);
    const up = forward({ host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    host,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe("replicas behind a round-robin balancer", () => {
  it("cake pull through a round-robin balancer over two fresh replicas gets the model, even while the backend upload is in flight", async () => {
    front.fault({ kind: "upload", throttleUp: Math.ceil((await dirBytes(model)) / 1.5), times: 1000 });
    const lb = await roundRobin([await replica("balanced-a"), await replica("balanced-b")]);
    try {
      const env = { CAKE_HOME: path.join(tmp, "client"), HF_ENDPOINT: hub.url, HF_TOKEN: "" };
      const pulled = await cake(["pull", "-q", `${lb.host}/hf/acme/balanced:main`], env);
      expect(pulled.stderr).toBe("");
      expect(pulled.code).toBe(0);
      expect((await cake(["export", "-q", `${lb.host}/hf/acme/balanced:main`, path.join(tmp, "balanced-out")], env)).code).toBe(0);
      expect(await hashTree(path.join(tmp, "balanced-out"))).toEqual(await hashTree(model));
    } finally {
      await lb.close();
    }
  });

  it("a client takes the manifest from one replica and every blob from another, byte-identical", async () => {
    const a = await replica("split-a");
    const b = await replica("split-b");
    const m = await get(`${a.url}/v2/hf/acme/split/manifests/main`);
    expect(m.status).toBe(200);
    await a.service.backendSettled();
    const manifest = JSON.parse(m.body.toString()) as Manifest;
    const digests = [manifest.config.digest, ...manifest.layers.map((l) => l.digest)];
    // alternate between the replicas, as a round-robin balancer does
    for (const [i, d] of digests.entries()) {
      const r = await get(`${(i % 2 ? a : b).url}/v2/hf/acme/split/blobs/${d}`);
      expect(r.status).toBe(200);
      expect(sha256(r.body)).toBe(d);
    }
    const again = await get(`${b.url}/v2/hf/acme/split/manifests/${m.digest}`);
    expect(again.status).toBe(200);
    expect(again.body.equals(m.body)).toBe(true);
    expect(b.service.metrics.conversions).toBe(0);
  });

  it("the ModelPack view too: its manifest from one replica, every file and the config from another, byte-identical", async () => {
    const a = await replica("mp-a");
    const m = await get(`${a.url}/v2/mp/acme/mpsplit/manifests/main`);
    expect(m.status).toBe(200);
    await a.service.backendSettled();
    const b = await replica("mp-b");
    const manifest = JSON.parse(m.body.toString()) as Manifest & { layers: { annotations: Record<string, string> }[] };
    for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
      const r = await get(`${b.url}/v2/mp/acme/mpsplit/blobs/${d}`);
      expect(r.status, d).toBe(200);
      expect(sha256(r.body)).toBe(d);
    }
    expect(b.service.metrics.conversions).toBe(0);
  });

  it("a blob asked of a replica that never saw the model comes from the backend; one nowhere is BLOB_UNKNOWN", async () => {
    const a = await replica("stranger-a");
    const manifest = JSON.parse((await get(`${a.url}/v2/hf/acme/stranger/manifests/main`)).body.toString()) as Manifest;
    await a.service.backendSettled();
    const b = await replica("stranger-b");
    hub.counters.reset();
    const big = manifest.layers[0]!.digest;
    const r = await get(`${b.url}/v2/hf/acme/stranger/blobs/${big}`);
    expect(r.status).toBe(200);
    expect(sha256(r.body)).toBe(big);
    expect(hub.counters.bytesServed).toBe(0);
    // ...and its metrics say so: the blob's bytes (and the manifest, config and recipe) from the backend.
    expect(b.service.metrics.backendBytes).toBeGreaterThanOrEqual(manifest.layers[0]!.size);
    expect(b.service.metrics.upstreamBytes).toBe(b.service.metrics.backendBytes);
    expect(a.service.metrics.uploadsPending).toBe(0);
    const missing = `sha256:${"0".repeat(64)}`;
    const none = await get(`${b.url}/v2/hf/acme/stranger/blobs/${missing}`);
    expect(none.status).toBe(404);
    expect(none.body.toString()).toContain(`no blob ${missing} in this model`);
  });

  it("the first manifest is answered before the backend upload lands, and the upload lands later", async () => {
    // ~1.5 s of upload for the model's bytes: the answer must not wait for it
    front.fault({ kind: "upload", throttleUp: Math.ceil((await dirBytes(model)) / 1.5), times: 1000 });
    const a = await replica("slow-push-a");
    const m = await get(`${a.url}/v2/hf/acme/slow-push/manifests/main`);
    expect(m.status).toBe(200);
    expect(await inBackend("slow-push")).toBe(false);
    await a.service.backendSettled();
    expect(await inBackend("slow-push")).toBe(true);
    const b = await replica("slow-push-b");
    expect((await get(`${b.url}/v2/hf/acme/slow-push/manifests/main`)).digest).toBe(m.digest);
    expect(b.service.metrics.conversions).toBe(0);
  });

  it("two replicas asked for the same cold revision at once convert it once", async () => {
    const a = await replica("cold-a");
    const b = await replica("cold-b");
    const bytes = await dirBytes(model);
    // a slow Hub keeps the first conversion running while the second replica is asked
    hub.setKnobs({ bandwidth: Math.ceil(bytes / 1.5) });
    hub.counters.reset();
    const first = get(`${a.url}/v2/hf/acme/cold/manifests/main`);
    await waitFor(() => a.service.metrics.conversions === 1, 20_000, "replica A to start converting");
    const second = await get(`${b.url}/v2/hf/acme/cold/manifests/main`);
    const one = await first;
    expect(one.status).toBe(200);
    expect(second.status).toBe(200);
    expect(second.digest).toBe(one.digest);
    expect(a.service.metrics.conversions + b.service.metrics.conversions).toBe(1);
    expect(hub.counters.bytesServed).toBeLessThan(bytes * 1.2);
  });

  it("two replicas asked for the same cold revision at the same instant convert it once, though one's claim lands late", async () => {
    // The order that lets both convert without a second look: both replicas look (no claim), one
    // writes and reads its own back, and only then does the other's claim land.
    let release1!: () => void;
    let release2!: () => void;
    const bothLooked = new Promise<void>((resolve) => (release1 = resolve));
    const readBack = new Promise<void>((resolve) => (release2 = resolve));
    const isClaim = (req: { url?: string }) => (req.url ?? "").endsWith("-claim");
    let looks = 0;
    front.fault({ method: "PUT", kind: "manifest", when: isClaim, hold: bothLooked });
    front.fault({ method: "PUT", kind: "manifest", when: isClaim, hold: readBack });
    front.fault({
      kind: "manifest",
      times: 1000,
      when: (req) => {
        if (req.method === "HEAD" && isClaim(req) && ++looks === 2) release1();
        // the first read-back's GET: the other claim lands a moment after it is answered
        if (req.method === "GET" && isClaim(req)) setTimeout(release2, 100);
        return false;
      },
    });
    const a = await replica("instant-a");
    const b = await replica("instant-b");
    const [one, two] = await Promise.all([get(`${a.url}/v2/hf/acme/instant/manifests/main`), get(`${b.url}/v2/hf/acme/instant/manifests/main`)]);
    expect(one.status).toBe(200);
    expect(two.digest).toBe(one.digest);
    expect(looks).toBeGreaterThanOrEqual(3);
    expect(a.service.metrics.conversions + b.service.metrics.conversions).toBe(1);
  });

  it("a replica taking over from one that died mid-push takes the blobs already in the backend; the Hub gives only the rest", async () => {
    const bytes = await dirBytes(bigger);
    // A's push is slow (~2 s); once a few tensors have landed, the backend refuses it everything: it died.
    let dead = false;
    front.fault({ when: () => dead, times: 1_000_000, respond: { status: 403, body: JSON.stringify({ errors: [{ code: "DENIED", message: "gone" }] }) } });
    front.fault({ kind: "upload", throttleUp: Math.ceil(bytes / 2), times: 1000 });
    const a = await replica("resume-a");
    a.service.opts.claimTtlMs = 1000;
    const m = await get(`${a.url}/v2/hf/acme/resume/manifests/main`);
    expect(m.status).toBe(200);
    const landed = () => front.requests.filter((r) => r.method === "PUT" && r.kind === "upload" && r.status === 201).length;
    await waitFor(() => landed() >= 5, 20_000, "a few of replica A's uploads to land");
    dead = true;
    await waitFor(() => a.service.metrics.uploadFailures > 0, 20_000, "replica A's push to fail");
    await a.service.stop(); // no more tries
    expect(await inBackend("resume")).toBe(false);
    front.reset();
    const b = await replica("resume-b");
    b.service.opts.claimTtlMs = 1000;
    hub.counters.reset();
    const again = await get(`${b.url}/v2/hf/acme/resume/manifests/main`);
    expect(again.status).toBe(200);
    expect(again.digest).toBe(m.digest);
    expect(b.service.metrics.conversions).toBe(1);
    // What A pushed came from the backend; the rest, and each file's header read, from the Hub.
    const fromBackend = b.service.metrics.backendBytes;
    expect(fromBackend).toBeGreaterThan(0);
    expect(fromBackend).toBeLessThan(bytes);
    expect(hub.counters.bytesServed).toBeLessThan(bytes - fromBackend + 2 * (64 << 10));
    await b.service.backendSettled();
    expect(await inBackend("resume")).toBe(true);
    const manifest = JSON.parse(again.body.toString()) as Manifest;
    for (const l of manifest.layers) expect(sha256((await get(`${b.url}/v2/hf/acme/resume/blobs/${l.digest}`)).body)).toBe(l.digest);
  });

  it("a replica stopped mid-push cancels its uploads, leaving no _uploads in the backend's storage, and releases its claim", async () => {
    front.fault({ kind: "upload", throttleUp: Math.ceil((await dirBytes(bigger)) / 3), times: 1000 });
    const a = await replica("stopped-a");
    expect((await get(`${a.url}/v2/hf/acme/stopped/manifests/main`)).status).toBe(200);
    await waitFor(() => front.requests.some((r) => r.method === "PUT" && r.kind === "upload" && r.status === 201), 20_000, "replica A's first upload to land");
    await a.close(); // what SIGTERM does
    expect(await inBackend("stopped")).toBe(false);
    const uploads = path.join(reg.storageDir, "docker/registry/v2/repositories/cache/acme/stopped/_uploads");
    expect(await fs.readdir(uploads).catch(() => [])).toEqual([]);
    const claim = await get(`${reg.url}/v2/cache/acme/stopped/manifests/${commits.stopped}-claim`);
    expect((JSON.parse(claim.body.toString()) as { annotations: Record<string, string> }).annotations["dev.cake.proxy.claim.expires"]).toBe("0");
  });

  it("a backend that drops every connection costs a cold manifest a few tries, not the retries a blob is worth; the replica converts on its own", async () => {
    let tries = 0;
    const dead = createNetServer((c) => {
      tries++;
      c.destroy();
    });
    await new Promise<void>((resolve) => dead.listen(0, "127.0.0.1", resolve));
    try {
      const p = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, "down-a"), aliases: {}, quiet: true, backend: `127.0.0.1:${(dead.address() as AddressInfo).port}/cache` });
      running.push(p);
      const m = await get(`${p.url}/v2/hf/acme/cold/manifests/main`);
      expect(m.status).toBe(200);
      // Is it converted, is it claimed, the claim written, the resume entry: each asked twice at most.
      expect(tries, `${tries} connections`).toBeLessThanOrEqual(10);
      expect(p.service.metrics.conversions).toBe(1);
      await p.service.stop();
    } finally {
      dead.close();
    }
  });
});
