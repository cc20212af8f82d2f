/**
 * `cake diff` counts tensors by their own bytes: each tensor in the config carries its sha256, so a
 * small tensor packed next to a changed one is still shared, and a reshard of the same weights (new
 * files, new packs) shares every tensor. Configs written before the field still diff as they did.
 */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { diffConfigs, importDir, localFileSource, readSafetensorsHeader, Store, type Artifact, type ModelConfig } from "../../src/index.js";
import { llamaTensors, makeFineTune, makeLlamaLike } from "../fixtures/models.js";
import { cakeOk } from "../helpers/cli.js";
import { startRegistry, type RunningRegistry } from "../registry/harness.js";

// hidden 256, vocab 4096: the embeddings and lm_head (2 MiB each) are blobs of their own, every other
// tensor lies in a pack with its neighbours.
const MODEL = { hidden: 256, layers: 2, vocab: 4096 };
const CHANGED = "model.layers.1.post_attention_layernorm.weight";

let tmp: string;
let base: string;
let ft: string;
let resharded: string;
let reg: RunningRegistry;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-diff-"));
  base = path.join(tmp, "base");
  ft = path.join(tmp, "ft");
  resharded = path.join(tmp, "resharded");
  await makeLlamaLike(base, { ...MODEL, shards: 2 });
  await makeFineTune(base, ft, [CHANGED]);
  await makeLlamaLike(resharded, { ...MODEL, shards: 3 }); // same seed: the same weights, cut into other files
  reg = await startRegistry();
});
afterAll(() => Promise.all([reg?.close(), fs.rm(tmp, { recursive: true, force: true })]));

let stores = 0;
/** A fresh store (CAKE_HOME) for each user. */
const env = () => ({ CAKE_HOME: path.join(tmp, `store-${stores++}`), DOCKER_CONFIG: path.join(tmp, "docker") });
const ok = cakeOk;
type Count = { tensors: number; names: string[] };
type Diff = { shared: Count; changed: Count; added: Count; removed: Count; transferBytes: number };
const tensorsOf = (c: ModelConfig) => c.files.flatMap((f) => f.tensors ?? []);

describe("cake diff, tensor by tensor", () => {
  it("reports exactly the changed tensor of a fine-tune, though its pack holds unchanged ones", async () => {
    const e = env();
    await ok(["push", "-q", base, `${reg.host}/acme/m:base`], e);
    await ok(["push", "-q", ft, `${reg.host}/acme/m:ft`], e);
    const d = JSON.parse(await ok(["diff", "--json", `${reg.host}/acme/m:base`, `${reg.host}/acme/m:ft`], env())) as Diff;
    expect(d.changed.names).toEqual([CHANGED]);
    expect(d.added.tensors + d.removed.tensors).toBe(0);
    // a pull still moves the whole pack (blobs, not tensors): more than the 1 KiB norm
    expect(d.transferBytes).toBeGreaterThan(1024 * 4);
    const text = await ok(["diff", "--names", `${reg.host}/acme/m:base`, `${reg.host}/acme/m:ft`], e);
    expect(text.split("\n").filter((l) => l.startsWith("changed\t"))).toEqual([`changed\t${CHANGED}`]);
  });

  it("reports every tensor of a reshard of the same weights as shared", async () => {
    const e = env();
    await ok(["push", "-q", base, `${reg.host}/acme/m:v1`], e);
    await ok(["push", "-q", resharded, `${reg.host}/acme/m:resharded`], e);
    const d = JSON.parse(await ok(["diff", "--json", `${reg.host}/acme/m:v1`, `${reg.host}/acme/m:resharded`], e)) as Diff;
    expect(d.changed.tensors + d.added.tensors + d.removed.tensors).toBe(0);
    expect(d.shared.tensors).toBe(llamaTensors(MODEL).length);
  });
});

describe("the config's per-tensor sha256", () => {
  it("is the sha256 of each tensor's bytes in its file, for every tensor", async () => {
    const art = await importDir(base, new Store(path.join(tmp, "lib-store")));
    let packed = 0;
    for (const f of art.config.files.filter((x) => x.format === "safetensors")) {
      const file = path.join(base, f.path);
      const size = (await fs.stat(file)).size;
      const { header } = await readSafetensorsHeader(localFileSource(file, f.path, f.path, size));
      const bytes = await fs.readFile(file);
      for (const t of f.tensors!) {
        const info = header.tensors.find((x) => x.name === t.name)!;
        const own = createHash("sha256").update(bytes.subarray(header.dataStart + info.begin, header.dataStart + info.end)).digest("hex");
        expect(t.sha256, `${f.path} ${t.name}`).toBe(own);
        if (t.digest.slice(7) !== own) packed++;
      }
    }
    expect(packed).toBeGreaterThan(10); // most tensors of this model are packed
  });

  it("missing (a config written before it): diff compares where the bytes lie, as before", async () => {
    const store = new Store(path.join(tmp, "old-store"));
    const [a, b] = [await importDir(base, store), await importDir(ft, store)];
    const old = (x: Artifact) => ({ manifest: x.manifest, config: { ...x.config, files: x.config.files.map((f) => ({ ...f, ...(f.tensors ? { tensors: f.tensors.map(({ sha256: _, ...t }) => t) } : {}) })) } });
    const pack = tensorsOf(a.config).find((t) => t.name === CHANGED)!.digest;
    // (an empty tensor has no bytes to change: it is shared wherever it lies)
    const inPack = tensorsOf(a.config).filter((t) => t.digest === pack && t.size > 0).map((t) => t.name);
    expect(inPack.length).toBeGreaterThan(1);
    // both old: every tensor of the changed pack counts as changed, the others shared
    const d = diffConfigs(old(a), old(b));
    expect(d.changed.names.sort()).toEqual(inPack.sort());
    expect(d.shared.tensors).toBe(tensorsOf(a.config).length - inPack.length);
    // old against new: tensors that are blobs of their own are still recognised as shared
    const mixed = diffConfigs(old(a), b);
    expect(mixed.shared.names.sort()).toEqual(["lm_head.weight", "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.bias"].sort());
  });
});
