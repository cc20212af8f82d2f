/**
 * `cake proxy`: the OCI read API over the Hub emulation. The API is checked with supertest; interop
 * with the real oras, crane, skopeo and cake; and what crosses the wire with the emulation's counters
 * and the proxy's own metrics.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import request from "supertest";
import { request as httpGet } from "undici";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Store } from "../../src/index.js";
import { createApp, startProxy, type RunningProxy } from "../../proxy/index.js";
import { hashTree, makeFineTune, makeLlamaLike, dirBytes } from "../fixtures/models.js";
import { cake, CAKE, waitFor } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { requireTool, startRegistry } from "../registry/harness.js";

const run = promisify(execFile);
const TOKEN = "hf_proxy_alice";
const OCI = "application/vnd.oci.image.manifest.v1+json";
let tmp: string;
let base: string;
let ft: string;
let gated: string;
let hub: Hub;
let proxy: RunningProxy;
let baseCommit: string;
const CHANGED = ["model.layers.1.mlp.up_proj.weight", "lm_head.weight"];

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-proxy-"));
  base = path.join(tmp, "base");
  ft = path.join(tmp, "ft");
  await makeLlamaLike(base, { hidden: 512, layers: 2, vocab: 4096, shards: 2 });
  await makeFineTune(base, ft, CHANGED);
  hub = await startHub({ tokens: { [TOKEN]: { user: "alice", gatedAccess: ["acme/Gated-Llama"] } } });
  hub.addRepo("acme/Tiny-Llama");
  baseCommit = await hub.commit("acme/Tiny-Llama", base, { tags: ["v1.0"] });
  await hub.commit("acme/Tiny-Llama", ft, { branch: "refs/pr/1" });
  hub.addRepo("acme/tiny-llama-ft");
  await hub.commit("acme/tiny-llama-ft", ft);
  // the gated model has bytes of its own (no blob shared with the public ones)
  gated = path.join(tmp, "gated");
  await makeLlamaLike(gated, { hidden: 256, layers: 1, vocab: 2048, shards: 1, seed: 7 });
  hub.addRepo("acme/Gated-Llama", { gated: true });
  await hub.commit("acme/Gated-Llama", gated);
  proxy = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, "proxy-store"), aliases: { tiny: "acme/Tiny-Llama" }, quiet: true });
});
afterAll(async () => {
  await proxy?.close();
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  hub.setKnobs({ dropAfterBytes: 0, dropEvery: 0, fail429Every: 0, fail503Every: 0, bandwidth: 0 });
});

const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
let n = 0;
const storeEnv = () => ({ CAKE_HOME: path.join(tmp, `client-${n++}`), HF_ENDPOINT: hub.url, HF_TOKEN: "" });

describe("the OCI API (supertest)", () => {
  const app = () => createApp(proxy.service);

  it("answers /v2/, manifests with the headers clients need, and tag lists", async () => {
    await request(app()).get("/v2/").expect(200).expect("Docker-Distribution-API-Version", "registry/2.0");
    const m = await request(app()).get("/v2/hf/acme/tiny-llama/manifests/main").set("Accept", OCI).expect(200);
    expect(m.headers["content-type"]).toBe(OCI);
    const body = Buffer.from(m.text ?? m.body);
    expect(m.headers["docker-content-digest"]).toBe(sha256(Buffer.from(JSON.stringify(JSON.parse(m.text)))));
    expect(Number(m.headers["content-length"])).toBe(body.length);
    const head = await request(app()).head("/v2/hf/acme/tiny-llama/manifests/main").expect(200);
    expect(head.headers["docker-content-digest"]).toBe(m.headers["docker-content-digest"]);
    // by digest, by tag, by the commit, through an alias and through the encoded PR revision
    const digest = m.headers["docker-content-digest"]!;
    await request(app()).get(`/v2/hf/acme/tiny-llama/manifests/${digest}`).expect(200).expect("Docker-Content-Digest", digest);
    await request(app()).get(`/v2/hf/acme/tiny-llama/manifests/v1.0`).expect("Docker-Content-Digest", digest);
    await request(app()).get(`/v2/hf/acme/tiny-llama/manifests/${baseCommit}`).expect("Docker-Content-Digest", digest);
    await request(app()).get(`/v2/hf/tiny/manifests/main`).expect("Docker-Content-Digest", digest);
    const pr = await request(app()).get(`/v2/hf/acme/tiny-llama/manifests/refs__pr__1`).expect(200);
    expect(pr.headers["docker-content-digest"]).not.toBe(digest);
    const tags = await request(app()).get("/v2/hf/acme/tiny-llama/tags/list").expect(200);
    expect(tags.body.tags).toEqual(["main", "v1.0"]); // branches and tags (pull-request refs are not listed, as on the Hub)
    const page = await request(app()).get("/v2/hf/acme/tiny-llama/tags/list?n=1").expect(200);
    expect(page.body.tags).toEqual(["main"]);
    expect(page.headers.link).toContain('rel="next"');
  });

  it("serves blobs with Range (206), HEAD, and 416 past the end", async () => {
    const m = JSON.parse((await request(app()).get("/v2/hf/acme/tiny-llama/manifests/main").expect(200)).text) as { layers: { digest: string; size: number }[] };
    const big = [...m.layers].sort((a, b) => b.size - a.size)[0]!;
    const whole = await request(app()).get(`/v2/hf/acme/tiny-llama/blobs/${big.digest}`).buffer(true).parse(binary).expect(200);
    expect(sha256(whole.body as Buffer)).toBe(big.digest);
    const tail = await request(app()).get(`/v2/hf/acme/tiny-llama/blobs/${big.digest}`).set("Range", "bytes=1000-").buffer(true).parse(binary).expect(206);
    expect(tail.headers["content-range"]).toBe(`bytes 1000-${big.size - 1}/${big.size}`);
    expect(Buffer.compare(tail.body as Buffer, (whole.body as Buffer).subarray(1000))).toBe(0);
    const head = await request(app()).head(`/v2/hf/acme/tiny-llama/blobs/${big.digest}`).expect(200);
    expect(Number(head.headers["content-length"])).toBe(big.size);
    expect(head.headers["docker-content-digest"]).toBe(big.digest);
    await request(app()).get(`/v2/hf/acme/tiny-llama/blobs/${big.digest}`).set("Range", `bytes=${big.size}-`).expect(416);
  });

  it("resumes a blob download with curl -C - (Range from where the file stops)", async () => {
    const m = JSON.parse((await request(app()).get("/v2/hf/acme/tiny-llama/manifests/main").expect(200)).text) as { layers: { digest: string; size: number }[] };
    const big = [...m.layers].sort((a, b) => b.size - a.size)[0]!;
    const url = `${proxy.url}/v2/hf/acme/tiny-llama/blobs/${big.digest}`;
    const file = path.join(tmp, "curl-blob");
    await run("curl", ["-sf", "-r", "0-99999", "-o", file, url]);
    expect((await fs.stat(file)).size).toBe(100_000);
    await run("curl", ["-sf", "-C", "-", "-o", file, url]);
    expect(sha256(await fs.readFile(file))).toBe(big.digest);
  });

  it("gives the OCI error codes for unknown names, tags and digests, and refuses writes", async () => {
    const code = async (p: string, status: number, c: string, method: "get" | "put" = "get") => {
      const r = await request(app())[method](p).expect(status);
      expect(r.body.errors[0].code).toBe(c);
    };
    await code("/v2/hf/acme/nope/manifests/main", 404, "NAME_UNKNOWN");
    await code("/v2/other/thing/manifests/main", 404, "NAME_UNKNOWN");
    await code("/v2/hf/acme/tiny-llama/manifests/no-such-branch", 404, "MANIFEST_UNKNOWN");
    await code(`/v2/hf/acme/tiny-llama/blobs/sha256:${"0".repeat(64)}`, 404, "BLOB_UNKNOWN");
    await code(`/v2/hf/acme/tiny-llama/manifests/sha256:${"0".repeat(64)}`, 404, "MANIFEST_UNKNOWN");
    await code("/v2/hf/acme/tiny-llama/blobs/uploads/", 405, "UNSUPPORTED", "put");
  });

  it("exposes metrics and status", async () => {
    const metrics = await request(app()).get("/metrics").expect(200);
    expect(metrics.text).toMatch(/cake_proxy_conversions_total [1-9]/);
    expect(metrics.text).toMatch(/cake_proxy_served_bytes_total [1-9]/);
    const status = await request(app()).get("/_cake/status").expect(200);
    expect(status.body.metrics.conversions).toBeGreaterThan(0);
  });
});

function binary(res: request.Response, cb: (err: Error | null, body: Buffer) => void) {
  const chunks: Buffer[] = [];
  const stream = res as unknown as NodeJS.ReadableStream;
  stream.on("data", (c: Buffer) => chunks.push(c));
  stream.on("end", () => cb(null, Buffer.concat(chunks)));
}

describe("real clients through the proxy", () => {
  it("oras, crane, skopeo and cake pull the same model, byte-identical, with cake pull hf://'s digest", async () => {
    const oras = requireTool("oras");
    const crane = requireTool("crane");
    const skopeo = requireTool("skopeo");
    const ref = `${proxy.host}/hf/acme/tiny-llama:main`;
    const dir = path.join(tmp, "oras");
    await run(oras, ["pull", "--plain-http", "-o", dir, ref]);
    const e = storeEnv();
    expect((await cake(["export", "-q", dir, path.join(tmp, "oras-out")], e)).code).toBe(0);
    expect(await hashTree(path.join(tmp, "oras-out"))).toEqual(await hashTree(base));

    const direct = await cake(["pull", "-q", "hf://acme/Tiny-Llama"], e);
    const viaProxy = await cake(["pull", "-q", ref], storeEnv());
    expect(viaProxy.stderr).toBe("");
    expect(viaProxy.stdout).toBe(direct.stdout);
    const digest = direct.stdout.trim();

    const craneDir = path.join(tmp, "crane");
    await run(crane, ["pull", "--insecure", "--format=oci", ref, craneDir]);
    const ci = JSON.parse(await fs.readFile(path.join(craneDir, "index.json"), "utf8")) as { manifests: { digest: string }[] };
    expect(ci.manifests[0]!.digest).toBe(digest);

    const skopeoDir = path.join(tmp, "skopeo");
    await run(skopeo, ["copy", "--src-tls-verify=false", `docker://${ref}`, `oci:${skopeoDir}:main`]);
    const si = JSON.parse(await fs.readFile(path.join(skopeoDir, "index.json"), "utf8")) as { manifests: { digest: string }[] };
    expect(si.manifests[0]!.digest).toBe(digest);
    // (async: the proxy runs in this process, a sync child would deadlock it)
    const { stdout: manifestText } = await run(crane, ["manifest", "--insecure", ref]);
    for (const d of (JSON.parse(manifestText) as { layers: { digest: string }[] }).layers) {
      expect(sha256(await fs.readFile(path.join(skopeoDir, "blobs", "sha256", d.digest.slice(7))))).toBe(d.digest);
    }
  });

  it("a warm pull reads zero file bytes from the Hub; a fine-tune after its base downloads only the changed tensors", async () => {
    const e = storeEnv();
    hub.counters.reset();
    expect((await cake(["pull", "-q", `${proxy.host}/hf/acme/tiny-llama:main`], e)).code).toBe(0);
    expect(hub.counters.bytesServed).toBe(0);

    const before = proxy.service.metrics.servedBytes;
    const r = await cake(["pull", `${proxy.host}/hf/acme/tiny-llama-ft:main`], e);
    expect(r.code).toBe(0);
    const served = proxy.service.metrics.servedBytes - before;
    const diff = JSON.parse((await cake(["diff", "--json", `${proxy.host}/hf/acme/tiny-llama:main`, `${proxy.host}/hf/acme/tiny-llama-ft:main`], e)).stdout) as { transferBytes: number; changed: { names: string[] } };
    expect(diff.changed.names.sort()).toEqual([...CHANGED].sort());
    const manifestBytes = 20_000;
    expect(served).toBeGreaterThanOrEqual(diff.transferBytes);
    expect(served).toBeLessThan(diff.transferBytes + manifestBytes);
    expect(diff.transferBytes).toBeLessThan((await dirBytes(ft)) / 2);
  });

  it("16 concurrent clients pulling two models while the Hub drops connections all get correct bytes", async () => {
    const p2 = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, "proxy-store-2"), aliases: {}, quiet: true });
    try {
      hub.setKnobs({ dropAfterBytes: 200_000, dropEvery: 3, fail429Every: 11, retryAfterSeconds: 0 });
      const pullAll = async (model: string) => {
        const m = await httpGet(`${p2.url}/v2/hf/${model}/manifests/main`, { headers: { accept: OCI } });
        expect(m.statusCode).toBe(200);
        const bytes = Buffer.from(await m.body.arrayBuffer());
        expect(sha256(bytes)).toBe(m.headers["docker-content-digest"]);
        const man = JSON.parse(bytes.toString()) as { config: { digest: string }; layers: { digest: string }[] };
        for (const d of [man.config, ...man.layers]) {
          const b = await httpGet(`${p2.url}/v2/hf/${model}/blobs/${d.digest}`);
          expect(b.statusCode).toBe(200);
          expect(sha256(Buffer.from(await b.body.arrayBuffer()))).toBe(d.digest);
        }
        return m.headers["docker-content-digest"];
      };
      const models = ["acme/tiny-llama", "acme/tiny-llama-ft"];
      const digests = await Promise.all(Array.from({ length: 16 }, (_, i) => pullAll(models[i % 2]!)));
      expect(new Set(digests).size).toBe(2);
      expect(p2.service.metrics.conversions).toBe(2); // one shared conversion per model
      expect(hub.counters.dropped).toBeGreaterThan(0);
    } finally {
      await p2.close();
    }
  });

  it("gated repo: refused without credentials, served with them, never leaked from the cache", async () => {
    const app = createApp(proxy.service);
    const anon = await request(app).get("/v2/hf/acme/gated-llama/manifests/main").expect(401);
    expect(anon.headers["www-authenticate"]).toMatch(/^Basic realm=/);
    expect(anon.body.errors[0].code).toBe("UNAUTHORIZED");
    const basic = `Basic ${Buffer.from(`alice:${TOKEN}`).toString("base64")}`;
    const ok = await request(app).get("/v2/hf/acme/gated-llama/manifests/main").set("Authorization", basic).expect(200);
    const man = JSON.parse(ok.text) as { layers: { digest: string }[] };
    // now cached: still refused to anonymous clients and to tokens without access, for manifests and blobs
    await request(app).get("/v2/hf/acme/gated-llama/manifests/main").expect(401);
    await request(app).get(`/v2/hf/acme/gated-llama/manifests/${ok.headers["docker-content-digest"]}`).expect(401);
    await request(app).get(`/v2/hf/acme/gated-llama/blobs/${man.layers[1]!.digest}`).expect(401);
    const other = await request(app).get(`/v2/hf/acme/gated-llama/blobs/${man.layers[1]!.digest}`).set("Authorization", "Bearer hf_unknown").expect((r) => expect([401, 403]).toContain(r.status));
    expect(["UNAUTHORIZED", "DENIED"]).toContain(other.body.errors[0].code);
    // and a public model's name cannot be used to read a gated model's blobs
    await request(app).get(`/v2/hf/acme/tiny-llama/blobs/${man.layers[1]!.digest}`).expect((r) => expect(r.status).not.toBe(200));
    await request(app).get(`/v2/hf/acme/gated-llama/blobs/${man.layers[1]!.digest}`).set("Authorization", `Bearer ${TOKEN}`).expect(200);
    // real client with oras login-style credentials
    const dir = path.join(tmp, "oras-gated");
    const oras = requireTool("oras");
    await expect(run(oras, ["pull", "--plain-http", "-o", dir, `${proxy.host}/hf/acme/gated-llama:main`])).rejects.toThrow();
    await run(oras, ["pull", "--plain-http", "-u", "alice", "-p", TOKEN, "-o", dir, `${proxy.host}/hf/acme/gated-llama:main`]);
    expect((await cake(["export", "-q", dir, path.join(tmp, "gated-out")], storeEnv())).code).toBe(0);
    expect(await hashTree(path.join(tmp, "gated-out"))).toEqual(await hashTree(gated));
  });
});

describe("replicas sharing a backend registry", () => {
  it("a second proxy with an empty store serves a model another replica converted, without touching the Hub's files", async () => {
    const reg = await startRegistry();
    const mk = (name: string) => startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, name), aliases: {}, quiet: true, backend: `${reg.host}/cache` });
    const a = await mk("replica-a");
    const b = await mk("replica-b");
    try {
      const ra = await httpGet(`${a.url}/v2/hf/acme/tiny-llama-ft/manifests/main`, { headers: { accept: OCI } });
      await ra.body.dump();
      expect(ra.statusCode).toBe(200);
      expect(a.service.metrics.conversions).toBe(1);
      hub.counters.reset();
      const e = storeEnv();
      const pulled = await cake(["pull", "-q", `${b.host}/hf/acme/tiny-llama-ft:main`], e);
      expect(pulled.stderr).toBe("");
      expect(pulled.stdout.trim()).toBe(ra.headers["docker-content-digest"]);
      expect(b.service.metrics.conversions).toBe(0);
      expect(hub.counters.bytesServed).toBe(0);
      expect((await cake(["export", "-q", `${b.host}/hf/acme/tiny-llama-ft:main`, path.join(tmp, "replica-out")], e)).code).toBe(0);
      expect(await hashTree(path.join(tmp, "replica-out"))).toEqual(await hashTree(ft));
    } finally {
      await a.close();
      await b.close();
      await reg.close();
    }
  });
});

describe("the proxy as a process", () => {
  let child: ChildProcess | undefined;
  afterAll(() => child?.kill("SIGKILL"));

  it("a conversion that fails leaves no manifest behind and the next request converts again; blobs lost from the store are refetched by their Hub range", async () => {
    const store = path.join(tmp, "proc-store");
    child = spawn(process.execPath, [CAKE, "proxy", "--port", "0", "--hub", hub.url, "--store", store], {
      env: { ...process.env, CAKE_HTTP_RETRIES: "0" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let url = "";
    let logs = "";
    child.stdout!.on("data", (d) => (url += d));
    child.stderr!.on("data", (d) => (logs += d));
    await waitFor(() => /^http:\/\/\S+\n/.test(url), 20_000, "the proxy to listen");
    url = url.trim();
    hub.setKnobs({ dropAfterBytes: 0, dropEvery: 1 });
    const bad = await httpGet(`${url}/v2/hf/acme/tiny-llama/manifests/main`, { headers: { accept: OCI } });
    // An upstream that keeps cutting its answers is a 503 clients retry after a while, not a refusal.
    expect(bad.statusCode).toBe(503);
    expect(bad.headers["retry-after"]).toBe("5");
    const error = (JSON.parse(Buffer.from(await bad.body.arrayBuffer()).toString()) as { errors: { code: string; message: string }[] }).errors[0]!;
    expect(error.code).toBe("UNAVAILABLE");
    expect(error.message).toMatch(/^the Hub did not answer in full, try again: hf:\/\/acme\/Tiny-Llama@[0-9a-f]{12}\/model-0000[12]-of-00002\.safetensors: GET http:\/\/[^ ]+: connection closed after 0 B of 64\.0 KiB$/);
    expect((await new Store(store).tags()).length).toBe(0);
    hub.setKnobs({ dropAfterBytes: 0, dropEvery: 0 });
    const good = await httpGet(`${url}/v2/hf/acme/tiny-llama/manifests/main`, { headers: { accept: OCI } });
    const man = JSON.parse(Buffer.from(await good.body.arrayBuffer()).toString()) as { layers: { digest: string; size: number }[] };
    expect(good.statusCode).toBe(200);
    // a blob gone from the store (gc, a disk swap) comes back from the Hub, verified
    const big = [...man.layers].sort((a, b) => b.size - a.size)[0]!;
    const blobFile = new Store(store).blobPath(big.digest);
    await fs.chmod(blobFile, 0o644);
    await fs.rm(blobFile);
    hub.counters.reset();
    const b = await httpGet(`${url}/v2/hf/acme/tiny-llama/blobs/${big.digest}`);
    expect(b.statusCode).toBe(200);
    expect(sha256(Buffer.from(await b.body.arrayBuffer()))).toBe(big.digest);
    expect(hub.counters.bytesServed).toBe(big.size);
    // one JSON log line per request, and conversion events
    await waitFor(() => logs.split("\n").filter((l) => l.includes('"event":"request"')).length >= 3, 10_000, "three request log lines");
    const lines = logs.trim().split("\n").map((l) => JSON.parse(l) as { event: string });
    expect(lines.some((l) => l.event === "convert-done")).toBe(true);
    expect(lines.filter((l) => l.event === "request").length).toBeGreaterThanOrEqual(3);
  });

  it("cake proxy warm converts ahead of the first client", async () => {
    const store = path.join(tmp, "warm-store");
    const p = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store, aliases: {}, quiet: true });
    try {
      const r = await cake(["proxy", "warm", `${p.url}/hf/acme/tiny-llama-ft:main`], {});
      expect(r.stderr).toContain("is converted");
      expect(r.stdout.trim()).toMatch(/^sha256:[a-f0-9]{64}$/);
      expect(p.service.metrics.conversions).toBe(1);
      hub.counters.reset();
      await run(requireTool("oras"), ["pull", "--plain-http", "-o", path.join(tmp, "warm-oras"), `${p.host}/hf/acme/tiny-llama-ft:main`]);
      expect(hub.counters.bytesServed).toBe(0);
    } finally {
      await p.close();
    }
  });
});

