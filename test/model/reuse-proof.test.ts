/**
 * Proof of possession before bytes cross repos: a public repo whose listing claims a gated repo's
 * oids and sizes (serving the gated header, then zeros) gets nothing of the gated repo from the
 * store, through `cake pull` or through `cake proxy`; an honest copy of the same files still reuses
 * the stored bytes after a few windows of proof, paid once.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { request as httpGet } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Store } from "../../src/index.js";
import { startProxy, type RunningProxy } from "../../proxy/index.js";
import { dirBytes, hashTree, listAll, makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";

const TOKEN = "hf_alice_gated";
const OCI = "application/vnd.oci.image.manifest.v1+json";
let tmp: string;
let gated: string;
let hub: Hub;

/** A lure: every file of `src` the same size, safetensors files keeping their header, the rest zeros. */
async function makeLure(src: string, out: string): Promise<void> {
  for (const rel of await listAll(src)) {
    const bytes = await fs.readFile(path.join(src, rel));
    const lure = Buffer.alloc(bytes.length);
    if (rel.endsWith(".safetensors")) bytes.copy(lure, 0, 0, 8 + Number(bytes.readBigUInt64LE(0)));
    await fs.mkdir(path.dirname(path.join(out, rel)), { recursive: true });
    await fs.writeFile(path.join(out, rel), lure);
  }
}

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-proof-"));
  gated = path.join(tmp, "gated");
  await makeLlamaLike(gated, { hidden: 256, layers: 2, vocab: 2048, shards: 2, seed: 11 });
  const lure = path.join(tmp, "lure");
  await makeLure(gated, lure);
  hub = await startHub({ tokens: { [TOKEN]: { user: "alice", gatedAccess: ["acme/gated"] } } });
  hub.addRepo("acme/gated", { gated: true });
  const commit = await hub.commit("acme/gated", gated);
  await hub.commit("evil/lure", lure);
  await hub.commit("acme/copy", gated); // an honest public copy of the same files
  // The lure's listing claims the gated repo's oids and sizes (public: the gated repo's tree is listed to anyone).
  const res = await httpGet(`${hub.url}/api/models/acme/gated/tree/${commit}?recursive=true`);
  const truth = new Map((JSON.parse(await res.body.text()) as Array<{ path: string }>).map((e) => [e.path, e]));
  hub.setKnobs({ treeEntry: (repo, e) => (repo === "evil/lure" ? { ...e, ...truth.get(e.path as string) } : e) });
});
afterAll(async () => {
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

let n = 0;
const env = (store: string, extra: Record<string, string> = {}) => ({ CAKE_HOME: store, HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, `hf-${n++}`), ...extra });

describe("bytes reused across repos", () => {
  it("are refused to a repo whose listing claims another repo's files: one line, nothing tagged", async () => {
    const store = path.join(tmp, "store-cli");
    expect((await cake(["pull", "-q", "hf://acme/gated"], env(store, { HF_TOKEN: TOKEN }))).code).toBe(0);
    hub.counters.reset();
    const r = await cake(["pull", "-q", "hf://evil/lure"], env(store));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cake: hf:\/\/evil\/lure@[0-9a-f]{12}\/[^:]+: the Hub serves other bytes at \d+-\d+ than the file its listing names .*nothing tagged/);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect((await new Store(store).tags()).map((t) => t.ref).filter((ref) => ref.includes("lure"))).toEqual([]);
  });

  it("are served to an honest copy after a few windows of proof, paid once per repo", async () => {
    const store = path.join(tmp, "store-copy");
    expect((await cake(["pull", "-q", "hf://acme/gated"], env(store, { HF_TOKEN: TOKEN }))).code).toBe(0);
    hub.counters.reset();
    const copy = await cake(["pull", "-q", "hf://acme/copy"], env(store));
    expect(copy.stderr).toBe("");
    expect(copy.code).toBe(0);
    const model = await dirBytes(gated);
    // Headers and the proof's windows: a few KiB per tensor, not the model.
    expect(hub.counters.bytesServed).toBeLessThan(model / 4);
    expect(hub.counters.bytesServed).toBeGreaterThan(0);
    const out = path.join(tmp, "copy-out");
    expect((await cake(["export", "-q", "hf://acme/copy", out], env(store))).code).toBe(0);
    expect(await hashTree(out)).toEqual(await hashTree(gated));
    // Proven once: a new commit of the copy reuses the same bytes without asking for windows again.
    await fs.writeFile(path.join(tmp, "README.md"), "a new commit\n");
    const dir2 = path.join(tmp, "copy2");
    await fs.cp(gated, dir2, { recursive: true });
    await fs.copyFile(path.join(tmp, "README.md"), path.join(dir2, "README.md"));
    await hub.commit("acme/copy", dir2);
    hub.counters.reset();
    expect((await cake(["pull", "-q", "hf://acme/copy"], env(store))).code).toBe(0);
    const windows = [...hub.counters.rangesByFile.entries()].filter(([k]) => k.endsWith(".safetensors")).flatMap(([, r]) => r.filter(([a]) => a > 8 + 65536));
    expect(windows).toEqual([]);
  });
});

describe("the proxy cache", () => {
  let proxy: RunningProxy;
  beforeAll(async () => {
    proxy = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, "proxy-store"), aliases: {}, quiet: true });
  });
  afterAll(() => proxy?.close());

  it("gives an anonymous client nothing of a gated repo through a lying listing; the authorized client still gets everything", async () => {
    const authorized = env(path.join(tmp, "client-alice"), { DOCKER_CONFIG: path.join(tmp, "docker-alice") });
    const pull = await cake(["pull", "-q", "-u", "hf", "-p", TOKEN, `${proxy.host}/hf/acme/gated:main`], authorized);
    expect(pull.stderr).toBe("");
    expect(pull.code).toBe(0);

    hub.counters.reset();
    const lure = await httpGet(`${proxy.url}/v2/hf/evil/lure/manifests/main`, { headers: { accept: OCI } });
    const body = await lure.body.text();
    expect(lure.statusCode).toBeGreaterThanOrEqual(400);
    expect(body).toMatch(/the Hub serves other bytes at \d+-\d+ than the file its listing names/);
    expect((await new Store(path.join(tmp, "proxy-store")).tags()).map((t) => t.ref).filter((r) => r.includes("lure"))).toEqual([]);
    // Every blob of the gated model stays out of the lure's name.
    const man = await httpGet(`${proxy.url}/v2/hf/acme/gated/manifests/main`, { headers: { accept: OCI, authorization: `Basic ${Buffer.from(`hf:${TOKEN}`).toString("base64")}` } });
    const layers = (JSON.parse(await man.body.text()) as { layers: { digest: string }[] }).layers;
    for (const l of layers.slice(0, 3)) {
      const b = await httpGet(`${proxy.url}/v2/hf/evil/lure/blobs/${l.digest}`);
      await b.body.dump();
      expect(b.statusCode).toBe(404);
    }

    const again = await cake(["pull", "-q", "-u", "hf", "-p", TOKEN, `${proxy.host}/hf/acme/gated:main`], env(path.join(tmp, "client-alice-2"), { DOCKER_CONFIG: path.join(tmp, "docker-alice") }));
    expect(again.code).toBe(0);
    const out = path.join(tmp, "alice-out");
    expect((await cake(["export", "-q", `${proxy.host}/hf/acme/gated:main`, out], env(path.join(tmp, "client-alice-2")))).code).toBe(0);
    expect(await hashTree(out)).toEqual(await hashTree(gated));
  });
});
