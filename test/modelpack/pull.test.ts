/**
 * `cake pull` of other tools' model artifacts (CNCF ModelPack pushed by the real oras, Docker Model
 * Runner and KitOps layouts made by hand) from a real CNCF distribution registry, stored as cake
 * models: what a user sees (exit codes, lines, exported bytes) and what crosses the wire (a counting
 * proxy in front of the registry).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { parseHeader, readHeaderLength } from "../../src/format/safetensors.js";
import { hashTree } from "../fixtures/models.js";
import { cake, cakeOk } from "../helpers/cli.js";
import { startHub } from "../hub/emulator.js";
import { requireTool } from "../registry/harness.js";
import { base, CHANGED, env, ft, proxy, reg, tmp, useFineTuneRegistry } from "../registry/finetune-fixture.js";
import { MP_ARTIFACT, MP_CONFIG, MP_WEIGHT, makeTar, orasPushModelPack, pushHandMade, type HandLayer, type TarEntry } from "./peers.js";

useFineTuneRegistry("cake-mp-", async () => {
  await orasPushModelPack(base, `${reg.host}/mp/base:v1`, path.join(tmp, "work"));
  await orasPushModelPack(ft, `${reg.host}/mp/ft:v1`, path.join(tmp, "work"));
});

/** Bytes of blob bodies the registry sent through the proxy. */
const blobBytes = () => proxy.bytes("down", "GET", "blob");

/** The bytes of the named tensors in the safetensors files of `dir`. */
async function tensorBytes(dir: string, names: string[]): Promise<number> {
  let total = 0;
  for (const f of await fs.readdir(dir)) {
    if (!f.endsWith(".safetensors")) continue;
    const buf = await fs.readFile(path.join(dir, f));
    const len = readHeaderLength(buf.subarray(0, 8), buf.length, f);
    for (const t of parseHeader(buf.subarray(8, 8 + len), buf.length, f).tensors) if (names.includes(t.name)) total += t.end - t.begin;
  }
  return total;
}

describe("cake pull of a CNCF ModelPack artifact (pushed by oras)", () => {
  it("survives cut answers (every 3rd manifest and blob answer cut half-way, header reads included) and ends byte-identical", async () => {
    const e = env();
    let k = 0;
    proxy.fault({ method: "GET", times: 100_000, when: (req) => /\/(manifests|blobs)\//.test(req.url ?? ""), cutAnswer: () => (++k % 3 === 0 ? { fraction: 0.5 } : { fraction: 1.01 }) });
    try {
      await cakeOk(["pull", "-q", `${proxy.host}/mp/base:v1`], e);
    } finally {
      proxy.reset();
    }
    expect(k).toBeGreaterThan(6);
    const out = path.join(tmp, "out-cut");
    await cakeOk(["export", "-q", `${proxy.host}/mp/base:v1`, out], e);
    expect(await hashTree(out)).toEqual(await hashTree(base));
  });

  it("stores it as a cake model: export is byte-identical, inspect lists the tensors, a second pull fetches nothing", async () => {
    const e = env();
    const r = await cake(["pull", `${proxy.host}/mp/base:v1`], e);
    expect(r.stderr).toMatch(/mp\/base:v1: ModelPack artifact sha256:[0-9a-f]{64} stored as a cake model: 8 files/);
    expect(r.code).toBe(0);
    const out = path.join(tmp, "out-base");
    await cakeOk(["export", "-q", `${proxy.host}/mp/base:v1`, out], e);
    expect(await hashTree(out)).toEqual(await hashTree(base));
    const inspect = await cakeOk(["inspect", `${proxy.host}/mp/base:v1`], e);
    expect(inspect).toContain("lm_head.weight");
    // a cake model now: pushed as one (tensor blobs), pulled back into another store, the same files
    await cakeOk(["push", "-q", `${proxy.host}/mp/base:v1`, `${reg.host}/mirror/base:cake`], e);
    const e2 = env();
    await cakeOk(["pull", "-q", `${reg.host}/mirror/base:cake`], e2);
    await cakeOk(["export", "-q", `${reg.host}/mirror/base:cake`, path.join(tmp, "out-base-cake")], e2);
    expect(await hashTree(path.join(tmp, "out-base-cake"))).toEqual(await hashTree(base));
    proxy.reset();
    const again = await cake(["pull", `${proxy.host}/mp/base:v1`], e);
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/up to date \(ModelPack artifact sha256:/);
    expect(blobBytes()).toBe(0);
  });

  it("a fine-tune pulled after its base fetches only its changed tensors (plus headers and a few sample windows)", async () => {
    const e = env();
    await cakeOk(["pull", "-q", `${proxy.host}/mp/base:v1`], e);
    proxy.reset();
    const r = await cake(["pull", `${proxy.host}/mp/ft:v1`], e);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/tensors \([^)]+\) taken from the store/);
    const changed = await tensorBytes(ft, CHANGED);
    let total = 0;
    for (const f of await fs.readdir(ft)) total += (await fs.stat(path.join(ft, f))).size;
    // The changed tensors; the rest (two headers' 64 KiB reads, the small files, the samples) within 2 % of the model.
    expect(blobBytes()).toBeLessThanOrEqual(changed + 0.02 * total);
    expect(blobBytes()).toBeGreaterThanOrEqual(changed);
    const out = path.join(tmp, "out-ft");
    await cakeOk(["export", "-q", `${proxy.host}/mp/ft:v1`, out], e);
    expect(await hashTree(out)).toEqual(await hashTree(ft));
    // the two models share every unchanged tensor's blob
    const diff = await cakeOk(["diff", "--names", `${proxy.host}/mp/base:v1`, `${proxy.host}/mp/ft:v1`], e);
    for (const t of CHANGED) expect(diff).toContain(t);
  });
});

/** The PyPI ModelPack client's command, when installed (.ci/setup installs it; the test is skipped without it). */
const MODELPACK_CLIENT = spawnSync("modelpack", ["--help"]).status === 0;

describe("the same files from another source cost only proof windows", () => {
  it("pulled from the Hub first, then as a ModelPack artifact: no tensor fetched again, the registry's bytes sampled as proof", async () => {
    const hub = await startHub();
    try {
      await hub.commit("acme/base", base);
      const e = { ...env(), HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, "hf-home") };
      await cakeOk(["pull", "-q", "hf://acme/base"], e);
      proxy.reset();
      const r = await cake(["pull", `${proxy.host}/mp/base:v1`], e);
      expect(r.code).toBe(0);
      // the safetensors layers' digests are the Hub's LFS oids: their ranges are known; only headers and 256-byte proof windows move
      const safetensors = (await fs.readdir(base)).filter((f) => f.endsWith(".safetensors"));
      let small = 0;
      for (const f of await fs.readdir(base)) if (!f.endsWith(".safetensors")) small += (await fs.stat(path.join(base, f))).size;
      expect(blobBytes()).toBeLessThan(small + safetensors.length * (64 << 10) + 64 * 256);
      expect(proxy.requests.filter((q) => q.kind === "blob" && q.down === 256).length).toBeGreaterThan(0); // the proof: this registry serves those bytes
      const out = path.join(tmp, "out-hub-then-mp");
      await cakeOk(["export", "-q", `${proxy.host}/mp/base:v1`, out], e);
      expect(await hashTree(out)).toEqual(await hashTree(base));
    } finally {
      await hub.close();
    }
  });
});

describe("cake pull of a ModelPack artifact pushed by modelpack-client (PyPI)", () => {
  it.skipIf(!MODELPACK_CLIENT)("raw layers and a folder as a tar+gzip layer: stored as a cake model, export byte-identical", async () => {
    const dir = path.join(tmp, "mpc");
    await fs.cp(base, dir, { recursive: true });
    await fs.mkdir(path.join(dir, "extra"));
    await fs.writeFile(path.join(dir, "extra", "notes.md"), "# notes\n");
    const names = (await fs.readdir(base)).sort();
    const layers = names.flatMap((f) => ["--layer", `${f}:${f.endsWith(".safetensors") ? MP_WEIGHT : "application/vnd.cncf.model.weight.config.v1.raw"}`]);
    layers.push("--layer", "extra:application/vnd.cncf.model.doc.v1.tar+gzip");
    const diffIds = await Promise.all(names.map(async (f) => `sha256:${sha256Hex(await fs.readFile(path.join(dir, f)))}`));
    await fs.writeFile(path.join(tmp, "mpc-config.json"), JSON.stringify({ descriptor: { name: "base" }, config: { format: "safetensors" }, modelfs: { type: "layers", diffIds } }));
    const push = spawnSync("modelpack", ["--insecure", "push", "--config", path.join(tmp, "mpc-config.json"), ...layers, `${reg.host}/mpc/base:v1`], { cwd: dir, encoding: "utf8" });
    expect(push.status, push.stderr).toBe(0);
    const e = env();
    const r = await cake(["pull", `${reg.host}/mpc/base:v1`], e);
    expect(r.stderr).toMatch(/ModelPack artifact sha256:[0-9a-f]{64} stored as a cake model: 9 files/);
    const out = path.join(tmp, "out-mpc");
    await cakeOk(["export", "-q", `${reg.host}/mpc/base:v1`, out], e);
    expect(await hashTree(out)).toEqual(await hashTree(dir));
  });
});

describe("cake pull of a ModelPack artifact from a registry that ignores Range", () => {
  it("fetches each safetensors layer whole, says so once, and stores the same model", async () => {
    const e = env();
    // The proxy drops every blob request's Range header: the registry answers 200 with the whole blob.
    proxy.fault({ kind: "blob", method: "GET", times: 1000, dropRequestHeaders: ["range"] });
    const r = await cake(["pull", `${proxy.host}/mp/base:v1`], e);
    proxy.reset();
    expect(r.code).toBe(0);
    expect(r.stderr.match(/the registry ignores Range requests; 2 safetensors layer\(s\) fetched whole/g)?.length).toBe(1);
    const out = path.join(tmp, "out-norange");
    await cakeOk(["export", "-q", `${proxy.host}/mp/base:v1`, out], e);
    expect(await hashTree(out)).toEqual(await hashTree(base));
  });
});

/** The files of `dir` as tar entries (sorted paths). */
async function tarOf(dir: string): Promise<Buffer> {
  const entries = [];
  for (const f of (await fs.readdir(dir)).sort()) entries.push({ name: f, data: await fs.readFile(path.join(dir, f)) });
  return makeTar(entries);
}

describe("cake pull of tar layers and of other tools' artifacts", () => {
  it("a KitOps ModelKit (tar+gzip layers) is stored as a cake model; export rebuilds its files", async () => {
    const e = env();
    const model = gzipSync(await tarOf(base));
    const code = gzipSync(makeTar([{ name: "src", type: "5" }, { name: "src/train.py", data: Buffer.from("print('hi')\n") }]));
    pushHandMade(reg.host, "kit/tiny", "v1", { mediaType: "application/vnd.kitops.modelkit.config.v1+json", bytes: Buffer.from('{"manifestVersion":"1.0.0"}') }, [
      { mediaType: "application/vnd.kitops.modelkit.model.v1.tar+gzip", bytes: model },
      { mediaType: "application/vnd.kitops.modelkit.code.v1.tar+gzip", bytes: code },
    ]);
    const r = await cake(["pull", `${reg.host}/kit/tiny:v1`], e);
    expect(r.stderr).toMatch(/KitOps ModelKit artifact sha256:[0-9a-f]{64} stored as a cake model: 9 files/);
    const out = path.join(tmp, "out-kit");
    await cakeOk(["export", "-q", `${reg.host}/kit/tiny:v1`, out], e);
    const got = await hashTree(out);
    expect(got.get("src/train.py")).toBeDefined();
    got.delete("src/train.py");
    expect(got).toEqual(await hashTree(base));
    expect(await fs.readFile(path.join(out, "src/train.py"), "utf8")).toBe("print('hi')\n");
    // the tensors are blobs of their own, as from the Hub: the same model pushed by oras shares them all
    await cakeOk(["pull", "-q", `${reg.host}/mp/base:v1`], e);
    const diff = await cakeOk(["diff", "--json", `${reg.host}/mp/base:v1`, `${reg.host}/kit/tiny:v1`], e);
    const d = JSON.parse(diff) as { shared: { tensors: number }; changed: { tensors: number }; added: { tensors: number } };
    expect([d.changed.tensors, d.added.tensors]).toEqual([0, 0]);
    expect(d.shared.tensors).toBeGreaterThan(20);
  });

  it("a Docker Model Runner artifact: a GGUF layer without a name is model.gguf, a plain tar layer holds the rest", async () => {
    const e = env();
    const gguf = Buffer.concat([Buffer.from("GGUF"), Buffer.alloc(5000, 7)]);
    pushHandMade(reg.host, "ai/tiny", "v1", { mediaType: "application/vnd.docker.ai.model.config.v0.1+json", bytes: Buffer.from('{"config":{"format":"gguf"}}') }, [
      { mediaType: "application/vnd.docker.ai.gguf.v3", bytes: gguf },
      { mediaType: "application/vnd.docker.ai.license", bytes: Buffer.from("MIT\n") },
      { mediaType: "application/vnd.docker.ai.dir.tar", bytes: makeTar([{ name: "./tokenizer.json", data: Buffer.from("{}\n") }]) },
    ]);
    const r = await cake(["pull", `${reg.host}/ai/tiny:v1`], e);
    expect(r.stderr).toMatch(/Docker Model Runner artifact sha256:[0-9a-f]{64} stored as a cake model: 3 files/);
    const out = path.join(tmp, "out-dmr");
    await cakeOk(["export", "-q", `${reg.host}/ai/tiny:v1`, out], e);
    expect((await fs.readdir(out)).sort()).toEqual(["LICENSE", "model.gguf", "tokenizer.json"]);
    expect((await fs.readFile(path.join(out, "model.gguf"))).equals(gguf)).toBe(true);
  });

  it("a tar+zstd layer (zstd as the zstd CLI writes it) is stored as a cake model; export rebuilds its files", async () => {
    const e = env();
    const zstd = requireTool("zstd");
    const model = execFileSync(zstd, ["-q", "-c"], { input: await tarOf(base), maxBuffer: 1 << 30 });
    pushHandMade(reg.host, "mp/zstd", "v1", { mediaType: MP_CONFIG, bytes: Buffer.from("{}") }, [{ mediaType: "application/vnd.cncf.model.weight.v1.tar+zstd", bytes: model }], MP_ARTIFACT);
    await cakeOk(["pull", "-q", `${reg.host}/mp/zstd:v1`], e);
    const out = path.join(tmp, "out-zstd");
    await cakeOk(["export", "-q", `${reg.host}/mp/zstd:v1`, out], e);
    expect(await hashTree(out)).toEqual(await hashTree(base));
  });

  it("a tar+zstd layer that is not zstd: one line naming it, nothing tagged", async () => {
    const e = env();
    pushHandMade(reg.host, "mp/notzstd", "v1", { mediaType: MP_CONFIG, bytes: Buffer.from("{}") }, [{ mediaType: "application/vnd.cncf.model.weight.v1.tar+zstd", bytes: Buffer.from("not really zstd") }], MP_ARTIFACT);
    const r = await cake(["pull", `${reg.host}/mp/notzstd:v1`], e);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/mp\/notzstd:v1.*not zstd data/);
    expect((await cake(["ls", "--json"], e)).stdout).not.toContain("notzstd");
  });
});

describe("bad input: one clear line, nothing tagged, nothing stored under a wrong digest, nothing written outside the store", () => {
  const TAR = "application/vnd.cncf.model.weight.v1.tar";
  const cfg = { mediaType: MP_CONFIG, bytes: Buffer.from("{}") };
  let k = 0;

  /** Pulls `layers` as a ModelPack artifact; expects one line matching `line`, exit 1, and a clean store. */
  async function refused(layers: HandLayer[], line: RegExp, through: "registry" | "proxy" = "registry"): Promise<void> {
    const repo = `bad/case${k++}`;
    pushHandMade(reg.host, repo, "v1", cfg, layers, MP_ARTIFACT);
    const e = env();
    const host = through === "proxy" ? proxy.host : reg.host;
    const r = await cake(["pull", "-q", `${host}/${repo}:v1`], e);
    expect(r.stderr).toMatch(line);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.code).toBe(1);
    expect((await cake(["ls", "--json"], e)).stdout).not.toContain(repo);
    const blobs = path.join(e.CAKE_HOME, "blobs", "sha256");
    for (const name of await fs.readdir(blobs).catch(() => [])) expect(sha256Hex(await fs.readFile(path.join(blobs, name)))).toBe(name);
    expect(await findNamed(tmp, "evil")).toEqual([]);
    expect(await fs.readdir(path.join(e.CAKE_HOME, "ingest")).then((names) => names.filter((x) => x.startsWith("layers.")))).toEqual([]);
  }

  const weights = () => ({ mediaType: "application/vnd.cncf.model.weight.v1.raw", bytes: Buffer.from(`weights ${k}`), annotations: { "org.cncf.model.filepath": "model.bin" } });
  const tar = (entries: TarEntry[]): HandLayer => ({ mediaType: TAR, bytes: makeTar(entries) });
  const file = (name: string) => ({ name, data: Buffer.from("x") });

  it("a tar entry with '..'", () => refused([weights(), tar([file("../../evil")])], /bad\/case\d+:v1 \(ModelPack artifact\) layer sha256:[0-9a-f]{64}: tar entry path "\.\.\/\.\.\/evil" is not a safe relative path: '\.\.' component/));
  it("a tar entry with an absolute path", () => refused([weights(), tar([file("/tmp/evil")])], /tar entry "\/tmp\/evil" is an absolute path/));
  it("a symbolic link in a tar", () => refused([weights(), tar([{ name: "evil", type: "2", linkname: "/etc/passwd" }])], /tar entry "evil" is a symbolic link; only files and folders are accepted/));
  it("a hard link in a tar", () => refused([weights(), tar([file("a"), { name: "evil", type: "1", linkname: "a" }])], /tar entry "evil" is a hard link/));
  it("a device file in a tar", () => refused([weights(), tar([{ name: "evil", type: "3" }])], /tar entry "evil" is a character device/));
  it("a path twice in a tar, and a tar path that a raw layer has too", async () => {
    await refused([weights(), tar([file("a.json"), file("a.json")])], /a\.json is listed twice; an artifact's files must each have one path/);
    await refused([weights(), tar([file("model.bin")])], /model\.bin is listed twice/);
  });
  it("a raw layer whose file path leaves the model", async () => {
    await refused([weights(), { mediaType: MP_WEIGHT, bytes: Buffer.from("x"), annotations: { "org.cncf.model.filepath": "../evil" } }], /layer sha256:[0-9a-f]{64} path "\.\.\/evil" is not a safe relative path/);
    await refused([weights(), { mediaType: MP_WEIGHT, bytes: Buffer.from("y"), annotations: { "org.cncf.model.filepath": "/tmp/evil" } }], /path "\/tmp\/evil" is not a safe relative path: absolute/);
  });
  it("an artifact with no weights", () => refused([{ mediaType: "application/vnd.cncf.model.doc.v1.raw", bytes: Buffer.from("# readme\n"), annotations: { "org.cncf.model.filepath": "README.md" } }], /a ModelPack artifact with no weight layer: there is no model in it to pull/));
  it("a safetensors header that overruns the blob", () => {
    const bytes = Buffer.concat([Buffer.from([0x40, 0x42, 0x0f, 0, 0, 0, 0, 0]), Buffer.from('{"a":1}')]);
    return refused([{ mediaType: MP_WEIGHT, bytes, annotations: { "org.cncf.model.filepath": "model.safetensors" } }], /bad\/case\d+:v1 \(ModelPack artifact\) layer sha256:[0-9a-f]{64}: model\.safetensors: invalid safetensors: header length 1000000 runs past the end of the 15-byte file/);
  });
  it("layers whose descriptors lie about their size", async () => {
    const bytes = Buffer.from("some config bytes\n");
    await refused([weights(), { mediaType: "application/vnd.cncf.model.weight.config.v1.raw", bytes, claimSize: bytes.length + 100, annotations: { "org.cncf.model.filepath": "config.json" } }], /bad\/case\d+:v1 \(ModelPack artifact\): a layer is smaller than its descriptor says \(.*bad\/case\d+@sha256:[0-9a-f]{64}: GET .* returned 416 Range Not Satisfiable\); the artifact's manifest is wrong/);
    // fewer bytes than the safetensors header's tensors need: refused before any tensor is fetched
    const st = await fs.readFile(path.join(base, "model-00001-of-00002.safetensors"));
    await refused([{ mediaType: MP_WEIGHT, bytes: st, claimSize: st.length - 10, annotations: { "org.cncf.model.filepath": "model.safetensors" } }], /bad\/case\d+:v1 \(ModelPack artifact\) layer sha256:[0-9a-f]{64}: model\.safetensors: invalid safetensors: /);
  });
  it("a registry that sends other bytes than a layer's digest", async () => {
    const st = await fs.readFile(path.join(base, "model-00001-of-00002.safetensors"));
    // Past the header, every answer has one byte flipped: the tensors do not make the layer's sha256.
    proxy.fault({ kind: "blob", method: "GET", times: 1000, when: (req) => /bytes=([1-9]\d{5,})-/.test(String(req.headers.range ?? "")), rewrite: ({ body }) => ({ body: Buffer.concat([body.subarray(0, 1).map((b) => b ^ 1), body.subarray(1)]) }) });
    try {
      await refused([{ mediaType: MP_WEIGHT, bytes: st, annotations: { "org.cncf.model.filepath": "model.safetensors" } }], /model\.safetensors: the bytes read from .* hash to sha256 [0-9a-f]{64}, not the sha256 [0-9a-f]{64} its source names/, "proxy");
    } finally {
      proxy.reset();
    }
  });
});

const sha256Hex = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Paths under `dir` whose name contains `part`. */
async function findNamed(dir: string, part: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true })) if (e.name.includes(part)) out.push(path.join(e.parentPath ?? dir, e.name));
  return out;
}
