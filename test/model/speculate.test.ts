/**
 * Fine-tune dedup straight from the Hub: a pull takes the tensors the store already holds under
 * another model (same name, dtype, shape, and sampled windows that match), proves them with each
 * file's sha256 against the Hub's, and fetches only the rest. A wrong guess (a change the windows
 * missed) costs a refetch of that file's guessed tensors, never a wrong byte.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startProxy } from "../../proxy/index.js";
import { dirBytes, hashTree, makeFineTune, makeLlamaLike } from "../fixtures/models.js";
import { cake, spawnCake, waitFor } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { startRegistry, type RunningRegistry } from "../registry/harness.js";

let tmp: string;
let hub: Hub;
let base: string;
let ft: string;
let ft2: string;
let ft3: string;
let reshard: string;
let stealth: string;
let metaOnly: string;
let rowsChanged: string;
/** Tensors the fine-tune changed (big enough to be their own blobs). */
const CHANGED = ["model.layers.1.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight"];
let changedBytes = 0;
let modelBytes = 0;

/** The byte sizes of the named tensors in a safetensors dir. */
async function tensorBytes(dir: string, names: string[]): Promise<number> {
  let n = 0;
  for (const f of (await fs.readdir(dir)).filter((x) => x.endsWith(".safetensors"))) {
    const b = await fs.readFile(path.join(dir, f));
    const h = JSON.parse(b.subarray(8, 8 + Number(b.readBigUInt64LE(0))).toString()) as Record<string, { data_offsets?: [number, number] }>;
    for (const name of names) if (h[name]?.data_offsets) n += h[name].data_offsets[1] - h[name].data_offsets[0];
  }
  return n;
}

/** A copy of `src` whose safetensors headers carry other `__metadata__`: every tensor's offset in the file moves. */
async function makeMetadataOnly(src: string, out: string): Promise<void> {
  await fs.cp(src, out, { recursive: true });
  for (const f of (await fs.readdir(out)).filter((x) => x.endsWith(".safetensors"))) {
    const file = path.join(out, f);
    const b = await fs.readFile(file);
    const n = Number(b.readBigUInt64LE(0));
    const header = JSON.parse(b.subarray(8, 8 + n).toString()) as Record<string, unknown>;
    header.__metadata__ = { format: "pt", edited: "by a test, with a longer value than before" };
    let json = Buffer.from(JSON.stringify(header));
    json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    await fs.writeFile(file, Buffer.concat([len, json, b.subarray(8 + n)]));
  }
}

/** A copy of `src` with `count` bytes of one tensor changed, from `at` (given the tensor's byte range in the file). */
async function changeTensorBytes(src: string, out: string, tensor: string, at: (begin: number, end: number) => number, count: number): Promise<void> {
  await fs.cp(src, out, { recursive: true });
  for (const f of (await fs.readdir(out)).filter((x) => x.endsWith(".safetensors"))) {
    const file = path.join(out, f);
    const b = await fs.readFile(file);
    const n = Number(b.readBigUInt64LE(0));
    const t = (JSON.parse(b.subarray(8, 8 + n).toString()) as Record<string, { data_offsets?: [number, number] }>)[tensor];
    if (!t?.data_offsets) continue;
    const from = at(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]);
    for (let i = 0; i < count; i++) b[from + i] = (b[from + i]! ^ 0x5a) & 0xff;
    await fs.writeFile(file, b);
  }
}

/** `rows` rows (of `rowBytes`) of one tensor changed from row `from`: what adding tokens does to an embedding. */
const makeRowsChanged = (src: string, out: string, tensor: string, from: number, rows: number, rowBytes: number) =>
  changeTensorBytes(src, out, tensor, (begin) => begin + from * rowBytes, rows * rowBytes);

/** 4 KiB in the middle of one big tensor changed: a change sampling may miss. */
const makeStealth = (src: string, out: string, tensor: string) => changeTensorBytes(src, out, tensor, (begin, end) => Math.floor((begin + end) / 2), 4096);

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-guess-"));
  base = path.join(tmp, "base");
  ft = path.join(tmp, "ft");
  ft2 = path.join(tmp, "ft2");
  ft3 = path.join(tmp, "ft3");
  reshard = path.join(tmp, "reshard");
  stealth = path.join(tmp, "stealth");
  metaOnly = path.join(tmp, "meta");
  rowsChanged = path.join(tmp, "rows");
  await makeLlamaLike(base, { hidden: 512, layers: 2, vocab: 4096, shards: 2, seed: 3 });
  await makeLlamaLike(reshard, { hidden: 512, layers: 2, vocab: 4096, shards: 3, seed: 3 });
  await makeFineTune(base, ft, CHANGED);
  await makeFineTune(base, ft2, ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]);
  await makeFineTune(base, ft3, ["model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.gate_proj.weight"]);
  await makeStealth(base, stealth, "model.layers.0.mlp.gate_proj.weight");
  await makeMetadataOnly(base, metaOnly);
  await makeRowsChanged(base, rowsChanged, "model.embed_tokens.weight", 2000, 8, 512 * 2);
  changedBytes = await tensorBytes(base, CHANGED);
  modelBytes = await dirBytes(base);
  hub = await startHub();
  await hub.commit("acme/base", base);
  await hub.commit("acme/ft", ft);
  await hub.commit("acme/ft2", ft2);
  await hub.commit("acme/ft3", ft3);
  await hub.commit("acme/reshard", reshard);
  await hub.commit("acme/stealth", stealth);
  await hub.commit("acme/meta", metaOnly);
  await hub.commit("acme/rows", rowsChanged);
});
afterAll(async () => {
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});
beforeEach(() => hub.counters.reset());

let n = 0;
const env = (store: string) => ({ CAKE_HOME: store, HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, `hf-${n++}`) });
const pull = async (ref: string, e: Record<string, string>) => {
  const r = await cake(["pull", ref], e);
  expect(r.code, r.stderr).toBe(0);
  return r;
};
const exportsAs = async (ref: string, e: Record<string, string>, want: string) => {
  const out = path.join(tmp, `out-${n++}`);
  expect((await cake(["export", "-q", ref, out], e)).code).toBe(0);
  expect(await hashTree(out)).toEqual(await hashTree(want));
};

describe("a pull after a related model", () => {
  it("takes the unchanged tensors of a fine-tune from its base: only the changed ones (and small packs) cross the network", async () => {
    const e = env(path.join(tmp, "store-ft"));
    await pull("hf://acme/base", e);
    hub.counters.reset();
    const r = await pull("hf://acme/ft", e);
    expect(r.stderr).toMatch(/hf:\/\/acme\/ft@main: \d+ tensors \([\d.]+ MiB\) taken from the store from hf:\/\/acme\/base@\S+: \d+ of \d+ sampled blobs matched, checked by [\d.]+ KiB of samples and each file's sha256; [\d.]+ MiB fetched from the Hub/);
    // Headers, samples and the small packed tensors (norms) come along; the rest is the changed tensors.
    expect(hub.counters.bytesServed).toBeLessThan(changedBytes + modelBytes * 0.2);
    expect(hub.counters.bytesServed).toBeGreaterThanOrEqual(changedBytes);
    await exportsAs("hf://acme/ft", e, ft);
  });

  /** Pulls the base into a fresh store, then `ref`: the Hub bytes the second pull cost, the export checked. */
  const afterBase = async (store: string, ref: string, want: string) => {
    const e = env(path.join(tmp, store));
    await pull("hf://acme/base", e);
    hub.counters.reset();
    await pull(ref, e);
    const served = hub.counters.bytesServed;
    await exportsAs(ref, e, want);
    return served;
  };

  it("moves almost nothing for the same weights resharded", async () => {
    expect(await afterBase("store-reshard", "hf://acme/reshard", reshard)).toBeLessThan(modelBytes * 0.2);
  });

  it("moves almost nothing for the same files with only their __metadata__ changed (every offset moved)", async () => {
    expect(await afterBase("store-meta", "hf://acme/meta", metaOnly)).toBeLessThan(modelBytes * 0.2);
  });

  it("a fine-tune that changed 8 rows of the embedding: byte-identical, whether the samples saw the rows or the file's hash did", async () => {
    const e = env(path.join(tmp, "store-rows"));
    await pull("hf://acme/base", e);
    await pull("hf://acme/rows", e);
    await exportsAs("hf://acme/rows", e, rowsChanged);
  });

  it("a pull killed while it speculates runs again to the end, byte-identical", async () => {
    const e = env(path.join(tmp, "store-kill"));
    await pull("hf://acme/base", e);
    hub.setKnobs({ bandwidth: 1 << 20 });
    const child = spawnCake(["pull", "-q", "hf://acme/ft"], e);
    const served0 = hub.counters.bytesServed;
    await waitFor(() => hub.counters.bytesServed > served0 + (256 << 10), 20_000, "the pull to be under way");
    child.kill("SIGKILL");
    await new Promise((r) => child.once("close", r));
    hub.setKnobs({ bandwidth: 0 });
    await pull("hf://acme/ft", e);
    await exportsAs("hf://acme/ft", e, ft);
  });

  it("prefers the model the repo declares as its base (cardData.base_model)", async () => {
    // Two local models with the same bytes: the one the fine-tune's card names is asked first.
    const declared = path.join(tmp, "ft-declared");
    await fs.cp(ft, declared, { recursive: true });
    await fs.writeFile(path.join(declared, "README.md"), "---\nbase_model: acme/base\nlicense: mit\n---\n# a fine-tune\n");
    await hub.commit("acme/ft-declared", declared);
    await hub.commit("acme/a-copy", base);
    const e = env(path.join(tmp, "store-declared"));
    await pull("hf://acme/a-copy", e);
    await pull("hf://acme/base", e);
    const r = await pull("hf://acme/ft-declared", e);
    expect(r.stderr).toMatch(/taken from the store from hf:\/\/acme\/base@[0-9a-f]{40}: /);
    await exportsAs("hf://acme/ft-declared", e, declared);
  });

  it("picks, of two local fine-tunes, the one whose bytes match", async () => {
    const e = env(path.join(tmp, "store-two"));
    await pull("hf://acme/ft2", e);
    await pull("hf://acme/ft3", e);
    hub.counters.reset();
    // Every file of the base differs from both fine-tunes' (no file is reused whole), but each of its
    // tensors is unchanged in one of them.
    const r = await pull("hf://acme/base", e);
    expect(r.stderr).toMatch(/taken from the store from hf:\/\/acme\/ft[23]@\S+, hf:\/\/acme\/ft[23]@/);
    expect(hub.counters.bytesServed).toBeLessThan(modelBytes * 0.25);
    await exportsAs("hf://acme/base", e, base);
  });

  it("catches a change the samples missed with the file's sha256: refetches, says so, exports byte-identical", async () => {
    // The samples' random window lands on the change once in ~170 pulls (then no guess is taken, and
    // this path is not reached): a fresh store and another pull then, up to three times.
    const missed = /cake: hf:\/\/acme\/stealth@main: model-0000[12]-of-00002\.safetensors: tensors taken from a local model did not make the Hub's file; fetching them/;
    let e = env(path.join(tmp, "store-stealth"));
    let r = { stderr: "" };
    for (let attempt = 0; attempt < 3 && !missed.test(r.stderr); attempt++) {
      e = env(path.join(tmp, `store-stealth-${attempt}`));
      await pull("hf://acme/base", e);
      r = await pull("hf://acme/stealth", e);
    }
    expect(r.stderr).toMatch(missed);
    await exportsAs("hf://acme/stealth", e, stealth);
    // The wrong pair is remembered: the same guess is not made twice.
    const again = await cake(["pull", "hf://acme/stealth@main"], { ...e, CAKE_HOME: e.CAKE_HOME });
    expect(again.stderr).not.toMatch(/did not make the Hub's file/);
  });

  it("asks for no samples when nothing local matches", async () => {
    const e = env(path.join(tmp, "store-empty"));
    await pull("hf://acme/base", e);
    const served = hub.counters.bytesServed;
    expect(served).toBe(modelBytes + (await headerOverRead(base)));
  });

  it("a proxy converting the fine-tune after its base moves only what changed", async () => {
    const proxy = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, "proxy-store"), aliases: {}, quiet: true });
    try {
      const e = env(path.join(tmp, "proxy-client"));
      await pull(`${proxy.host}/hf/acme/base:main`, e);
      hub.counters.reset();
      await pull(`${proxy.host}/hf/acme/ft:main`, e);
      expect(hub.counters.bytesServed).toBeLessThan(changedBytes + modelBytes * 0.2);
      await exportsAs(`${proxy.host}/hf/acme/ft:main`, e, ft);
    } finally {
      await proxy.close();
    }
  });
});

/** What the 64 KiB header reads take along beyond each shard's header (the only bytes served twice on a fresh pull). */
async function headerOverRead(dir: string): Promise<number> {
  let n = 0;
  for (const f of (await fs.readdir(dir)).filter((x) => x.endsWith(".safetensors"))) {
    const b = await fs.readFile(path.join(dir, f));
    n += Math.min(b.length, 64 << 10) - (8 + Number(b.readBigUInt64LE(0)));
  }
  return n;
}

describe("a pull with an index (--index, CAKE_INDEX)", () => {
  let reg: RunningRegistry;
  beforeAll(async () => {
    reg = await startRegistry();
  });
  afterAll(() => reg?.close());

  it("knows every tensor's digest before a byte moves: no samples, only what the store lacks crosses the network", async () => {
    // A store that has the fine-tune publishes its index; another that has the base pulls with it.
    const seed = env(path.join(tmp, "index-seed"));
    await pull("hf://acme/ft", seed);
    const push = await cake(["index", "push", "hf://acme/ft", `${reg.host}/idx`], seed);
    expect(push.code, push.stderr).toBe(0);
    const e = { ...env(path.join(tmp, "index-user")), DOCKER_CONFIG: path.join(tmp, "docker") };
    await pull("hf://acme/base", e);
    hub.counters.reset();
    const r = await pull("hf://acme/ft", { ...e, CAKE_INDEX: `${reg.host}/idx` });
    expect(r.stderr).toMatch(/hf:\/\/acme\/ft@main: \d+ tensors \([\d.]+ MiB\) taken from the store as index \S+\/idx\/acme\/ft:[0-9a-f]{40} names them, checked by each file's sha256/);
    // Only the changed tensors' blobs (and the 64 KiB header reads) come from the Hub: no windows, no packs that did not change.
    expect(hub.counters.bytesServed).toBeLessThan(changedBytes + (128 << 10) + modelBytes * 0.15);
    await exportsAs("hf://acme/ft", e, ft);
  });

  it("a cake proxy is an index too: its hf/ names", async () => {
    const proxy = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, "index-proxy-store"), aliases: {}, quiet: true });
    try {
      const e = env(path.join(tmp, "index-proxy-user"));
      await pull("hf://acme/base", e);
      const r = await pull("hf://acme/ft", { ...e, CAKE_INDEX: `${proxy.host}/hf` });
      expect(r.stderr).toMatch(new RegExp(`taken from the store as index ${proxy.host}/hf/acme/ft:[0-9a-f]{40} names them`));
      await exportsAs("hf://acme/ft", e, ft);
    } finally {
      await proxy.close();
    }
  });

  it("an index that names the wrong bytes costs a refetch, never a wrong byte", async () => {
    // The base's index published under the fine-tune's name and commit: every unit named as the base's.
    const seed = env(path.join(tmp, "lie-seed"));
    await pull("hf://acme/base", seed);
    const baseIndex = await cake(["index", "push", "hf://acme/base", `${reg.host}/lie`], seed);
    expect(baseIndex.code, baseIndex.stderr).toBe(0);
    const ftCommit = (JSON.parse(await (await fetch(`${hub.url}/api/models/acme/ft/revision/main`)).text()) as { sha: string }).sha;
    // ...claiming the fine-tune's own file hashes (the Hub's LFS oids), so that its units are believed.
    const tree = JSON.parse(await (await fetch(`${hub.url}/api/models/acme/ft/tree/${ftCommit}?recursive=true`)).text()) as Array<{ path: string; lfs?: { oid: string } }>;
    const sha = new Map(tree.filter((t) => t.lfs).map((t) => [t.path, t.lfs!.oid]));
    const withHubHashes = (doc: Record<string, unknown>) => ({ ...doc, files: (doc.files as Array<{ path: string; sha256: string }>).map((f) => ({ ...f, sha256: sha.get(f.path) ?? f.sha256 })) });
    await retag(reg.url, "lie/acme/base", "lie/acme/ft", ftCommit, (cfg) => ({ ...withHubHashes(cfg), source: { type: "hf", repo: "acme/ft", commit: ftCommit } }), withHubHashes);
    const e = { ...env(path.join(tmp, "lie-user")), DOCKER_CONFIG: path.join(tmp, "docker") };
    await pull("hf://acme/base", e);
    const r = await pull("hf://acme/ft", { ...e, CAKE_INDEX: `${reg.host}/lie` });
    expect(r.stderr).toMatch(/tensors taken from a local model did not make the Hub's file; fetching them/);
    await exportsAs("hf://acme/ft", e, ft);
  });
});

/**
 * Copies the index artifact at `from:<its only tag>` to `to:<tag>`, its config rewritten by `edit`
 * (a lying index: another revision's units under this one's name).
 */
async function retag(
  registry: string,
  from: string,
  to: string,
  tag: string,
  edit: (cfg: Record<string, unknown>) => Record<string, unknown>,
  editRecipe: (recipe: Record<string, unknown>) => Record<string, unknown>,
): Promise<void> {
  const { createHash } = await import("node:crypto");
  const tags = (JSON.parse(await (await fetch(`${registry}/v2/${from}/tags/list`)).text()) as { tags: string[] }).tags;
  const accept = { accept: "application/vnd.oci.image.manifest.v1+json" };
  const man = JSON.parse(await (await fetch(`${registry}/v2/${from}/manifests/${tags[0]}`, { headers: accept })).text()) as { config: { digest: string; size: number }; layers: { digest: string; size: number }[] };
  const put = async (bytes: Buffer) => {
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    const start = await fetch(`${registry}/v2/${to}/blobs/uploads/`, { method: "POST" });
    const loc = new URL(start.headers.get("location")!, registry);
    loc.searchParams.set("digest", digest);
    expect((await fetch(loc, { method: "PUT", body: bytes, headers: { "content-type": "application/octet-stream" } })).status).toBe(201);
    return { digest, size: bytes.length };
  };
  const cfg = edit(JSON.parse(await (await fetch(`${registry}/v2/${from}/blobs/${man.config.digest}`)).text()) as Record<string, unknown>);
  man.config = { ...man.config, ...(await put(Buffer.from(JSON.stringify(cfg)))) };
  for (const [i, l] of man.layers.entries()) {
    const recipe = editRecipe(JSON.parse(await (await fetch(`${registry}/v2/${from}/blobs/${l.digest}`)).text()) as Record<string, unknown>);
    man.layers[i] = { ...l, ...(await put(Buffer.from(JSON.stringify(recipe)))) };
  }
  const res = await fetch(`${registry}/v2/${to}/manifests/${tag}`, { method: "PUT", body: JSON.stringify(man), headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } });
  expect(res.status).toBe(201);
}

describe("guessWindows", () => {
  it("samples nothing of an empty tensor, a small one whole, a big one at its ends and between", async () => {
    const { guessWindows, GUESS_WINDOW } = await import("../../src/model/speculate.js");
    expect(guessWindows(0, "model.norm.weight")).toEqual([]);
    expect(guessWindows(1000, "model.norm.weight")).toEqual([[0, 1000]]);
    const big = guessWindows(64 << 20, "model.layers.0.mlp.up_proj.weight");
    expect(big.slice(0, 2)).toEqual([
      [0, GUESS_WINDOW],
      [(64 << 20) - GUESS_WINDOW, 64 << 20],
    ]);
    expect(big.every(([a, b]) => b - a === GUESS_WINDOW && a >= 0 && b <= 64 << 20)).toBe(true);
    // An embedding's rows are sampled all along it: fine-tunes that add tokens change a few rows only.
    expect(guessWindows(64 << 20, "model.embed_tokens.weight").length).toBeGreaterThan(big.length + 10);
  });
});
