import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createHash } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { buildArtifact, EMPTY_DIGEST, RECIPE_TITLE } from "../../src/format/artifact.js";
import { MANIFEST_LIMIT, MT } from "../../src/format/oci.js";
import { MAX_LAYERS, PACK_FACTOR, planUnits, sortFiles, type ModelFile } from "../../src/format/plan.js";
import { parseRecipe } from "../../src/format/recipe.js";
import { encodeHeader, parseHeader } from "../../src/format/safetensors.js";
import { Store } from "../../src/store/layout.js";
import { importDir } from "../../src/model/dir-import.js";
import { exportTo } from "../../src/model/export.js";
import { sourceFromDir } from "../../src/model/source.js";
import { hashTree, makeLlamaLike, writeSafetensorsFile } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";

const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-mapping-"));
afterAll(() => fs.rm(tmp, { recursive: true, force: true }));

/** A safetensors ModelFile described by sizes only (the plan needs nothing else). */
function sizedFile(p: string, tensors: { name: string; bytes: number }[]): ModelFile {
  const { header } = encodeHeader(tensors.map((t) => ({ name: t.name, dtype: "U8", shape: [t.bytes] })));
  const n = Number(header.readBigUInt64LE(0));
  const total = 8 + n + tensors.reduce((s, t) => s + t.bytes, 0);
  return { path: p, size: total, sha256: "0".repeat(64), safetensors: { headerBytes: header, header: parseHeader(header.subarray(8), total, p) } };
}

const fakeDigest = (s: string) => `sha256:${createHash("sha256").update(s).digest("hex")}`;

describe("layer rule", () => {
  it("keeps big tensors one layer each and packs runs of small ones", () => {
    const f = sizedFile("m.safetensors", [
      { name: "a.big", bytes: 2 << 20 },
      { name: "b.norm", bytes: 4096 },
      { name: "c.norm", bytes: 4096 },
      { name: "d.big", bytes: 3 << 20 },
      { name: "e.bias", bytes: 100 },
    ]);
    const plan = planUnits([f]);
    expect(plan.threshold).toBe(1 << 20);
    expect(plan.units.map((u) => [u.kind, u.tensors.map((t) => t.name)])).toEqual([
      ["tensor", ["a.big"]],
      ["pack", ["b.norm", "c.norm"]],
      ["tensor", ["d.big"]],
      ["pack", ["e.bias"]],
    ]);
    // a pack is one contiguous byte range of the file: one Range request
    const pack = plan.units[1]!;
    expect(pack.end - pack.begin).toBe(8192);
  });

  it("a generated 30,000-tensor mixture-of-experts model stays under 4 MiB and the layer cap", () => {
    const tensors = [];
    for (let l = 0; l < 48; l++) {
      tensors.push({ name: `model.layers.${l}.input_layernorm.weight`, bytes: 4096 });
      for (let e = 0; e < 208; e++) for (const w of ["down", "gate", "up"]) tensors.push({ name: `model.layers.${l}.mlp.experts.${e}.${w}_proj.weight`, bytes: 3 << 20 });
    }
    expect(tensors.length).toBeGreaterThanOrEqual(30_000);
    const files = sortFiles([sizedFile("model-00001-of-00002.safetensors", tensors.slice(0, 15000)), sizedFile("model-00002-of-00002.safetensors", tensors.slice(15000))]);
    const plan = planUnits(files);
    expect(plan.layerCount).toBeLessThanOrEqual(MAX_LAYERS);
    const art = buildArtifact({ files, plan, unitDigests: plan.units.map((_, i) => fakeDigest(String(i))), packedTensorHashes: plan.units.map((u) => u.tensors.map((t) => fakeDigest(t.name).slice(7))), source: { type: "hf", repo: "acme/moe", commit: "a".repeat(40) }, maxLayers: MAX_LAYERS, packFactor: PACK_FACTOR });
    expect(art.manifestBytes.length).toBeLessThan(MANIFEST_LIMIT);
    expect(art.manifest.layers.length).toBeLessThanOrEqual(MAX_LAYERS);
    // every tensor is still addressable through the config
    const mapped = art.config.files.flatMap((f) => f.tensors ?? []);
    expect(mapped.length).toBe(tensors.length);
  });

  it("a dense model keeps one layer per big tensor (per-tensor dedup)", () => {
    const tensors = Array.from({ length: 300 }, (_, i) => ({ name: `w${String(i).padStart(3, "0")}`, bytes: 2 << 20 }));
    const plan = planUnits([sizedFile("model.safetensors", tensors)]);
    expect(plan.units.filter((u) => u.kind === "tensor").length).toBe(300);
  });
});

describe("artifact", () => {
  it("is deterministic, dedups identical tensors, titles files by repo path, and round-trips through an oras-style dir", async () => {
    const model = path.join(tmp, "model");
    await makeLlamaLike(model, { hidden: 256, layers: 2, shards: 2 });
    // a tensor duplicated under another name in another file
    // one big tensor stored twice, in two files under two names; an empty tensor alone at the end
    await writeSafetensorsFile(path.join(model, "extra-a.safetensors"), [{ name: "copy.of.embed", dtype: "BF16", shape: [1024, 1024], fill: 42 }]);
    await writeSafetensorsFile(path.join(model, "extra-b.safetensors"), [
      { name: "copy.again", dtype: "BF16", shape: [1024, 1024], fill: 42 },
      { name: "nothing", dtype: "F32", shape: [0] },
    ]);
    const a = await importDir(model, new Store(path.join(tmp, "s1")));
    const b = await importDir(model, new Store(path.join(tmp, "s2")));
    expect(a.digest).toBe(b.digest);
    expect(Buffer.compare(a.manifestBytes, b.manifestBytes)).toBe(0);

    const m = a.manifest;
    expect(m.artifactType).toBe(MT.artifact);
    expect(m.layers[0]!.mediaType).toBe(MT.recipe);
    expect(m.layers[0]!.annotations!["org.opencontainers.image.title"]).toBe(RECIPE_TITLE);
    const digests = m.layers.map((l) => l.digest);
    expect(new Set(digests).size).toBe(digests.length);
    const titles = m.layers.map((l) => l.annotations!["org.opencontainers.image.title"]);
    expect(titles).toContain("config.json");
    expect(titles).toContain("model.safetensors.index.json");
    const cfgFile = m.layers.find((l) => l.annotations!["org.opencontainers.image.title"] === "config.json")!;
    expect(cfgFile.annotations!["org.cncf.model.filepath"]).toBe("config.json");
    expect(cfgFile.mediaType).toBe(MT.mpWeightConfig);
    expect(m.layers.find((l) => l.annotations!["org.opencontainers.image.title"] === "README.md")!.mediaType).toBe(MT.mpDoc);

    const tensor = (file: string, name: string) => a.config.files.find((f) => f.path === file)!.tensors!.find((t) => t.name === name)!;
    const [c1, c2, empty] = [tensor("extra-a.safetensors", "copy.of.embed"), tensor("extra-b.safetensors", "copy.again"), tensor("extra-b.safetensors", "nothing")];
    expect(c1!.digest).toBe(c2!.digest);
    expect(c1!.size).toBe(2 << 20);
    expect(m.layers.filter((l) => l.digest === c1!.digest).length).toBe(1);
    expect(empty!.digest).toBe(EMPTY_DIGEST);
    expect(empty!.size).toBe(0);

    // an `oras pull`-style directory: each layer written under its title
    const dir = path.join(tmp, "oras-dir");
    const store = new Store(path.join(tmp, "s1"));
    for (const l of m.layers) {
      const t = path.join(dir, l.annotations!["org.opencontainers.image.title"]!);
      await fs.mkdir(path.dirname(t), { recursive: true });
      await fs.copyFile(store.blobPath(l.digest), t);
    }
    await exportTo(await sourceFromDir(dir), path.join(tmp, "out"));
    expect(await hashTree(path.join(tmp, "out"))).toEqual(await hashTree(model));

    // A directory anyone could edit is never trusted: one flipped byte in a tensor blob is caught, and
    // the file it would have rebuilt is not written (nor any temp file left beside it).
    // (a blob that only one file uses: which file reports a shared one first is a race)
    const usedBy = (d: string) => a.recipe.files.filter((f) => f.parts?.includes(d));
    const layer = m.layers.find((l) => (l.mediaType === MT.tensor || l.mediaType === MT.pack) && l.size > 1024 && usedBy(l.digest).length === 1)!;
    const [file] = usedBy(layer.digest) as [(typeof a.recipe.files)[number]];
    const blobFile = path.join(dir, layer.annotations!["org.opencontainers.image.title"]!);
    const bytes = await fs.readFile(blobFile);
    bytes[100] = bytes[100]! ^ 0xff;
    await fs.writeFile(blobFile, bytes);
    const out2 = path.join(tmp, "out-tampered");
    await expect(exportTo(await sourceFromDir(dir), out2)).rejects.toThrow(new RegExp(`^${file.path}: rebuilt file hashes to sha256 [a-f0-9]{64}, expected ${file.sha256}$`));
    // nothing of the failed export is left: no folder, no temp folder beside it
    expect(await fs.readdir(tmp)).not.toContain("out-tampered");
    expect((await fs.readdir(tmp)).filter((n) => n.endsWith(".tmp"))).toEqual([]);

    // A blob a byte short stops its file where the short blob ends (while the next piece is being
    // read ahead), with the same guarantees.
    await fs.truncate(blobFile, layer.size - 1);
    const out3 = path.join(tmp, "out-short");
    const short = new RegExp(`: blob ${layer.digest} for ${file.path.replace(/\./g, "\\.")} has ${layer.size - 1} bytes, the recipe says ${layer.size}$`);
    await expect(exportTo(await sourceFromDir(dir), out3)).rejects.toThrow(short);
    expect(await fs.readdir(tmp)).not.toContain("out-short");
    expect((await fs.readdir(tmp)).filter((n) => n.endsWith(".tmp"))).toEqual([]);
  });

  it("`cake export` of a hostile oras directory fails with one line and writes nothing outside the target", async () => {
    const dir = path.join(tmp, "hostile-dir");
    await fs.mkdir(path.join(dir, ".cake"), { recursive: true });
    const payload = Buffer.from("pwned");
    const d = `sha256:${createHash("sha256").update(payload).digest("hex")}`;
    await fs.writeFile(path.join(dir, "x"), payload);
    const recipe = {
      schemaVersion: 1,
      mediaType: MT.recipe,
      files: [{ path: "../escaped.txt", size: 5, sha256: d.slice(7), digest: d }],
      blobs: { [d]: { size: 5, title: "x" } },
    };
    await fs.writeFile(path.join(dir, ".cake", "recipe.json"), JSON.stringify(recipe));
    const out = path.join(tmp, "hostile-out");
    const r = await cake(["export", dir, out], { CAKE_HOME: path.join(tmp, "s-hostile") });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`cake: file path "../escaped.txt" is not a safe relative path: '..' component\n`);
    await expect(fs.stat(path.join(tmp, "escaped.txt"))).rejects.toThrow();
  });

  it("refuses hostile recipes: escaping paths and titles, bad digests, sizes that do not add up", () => {
    const good = {
      schemaVersion: 1,
      mediaType: MT.recipe,
      files: [{ path: "a.txt", size: 3, sha256: "a".repeat(64), digest: `sha256:${"b".repeat(64)}` }],
      blobs: { [`sha256:${"b".repeat(64)}`]: { size: 3, title: "a.txt" } },
    };
    const enc = (r: unknown) => Buffer.from(JSON.stringify(r));
    expect(parseRecipe(enc(good), "r").files.length).toBe(1);
    const variant = (fn: (r: typeof good & Record<string, unknown>) => void) => {
      const r = structuredClone(good) as typeof good & Record<string, unknown>;
      fn(r);
      return () => parseRecipe(enc(r), "r");
    };
    for (const p of ["../evil", "/etc/passwd", "a/../../b", "a\\..\\b", "a\u0000b", "C:/x", "a//b", "./a"]) {
      expect(variant((r) => (r.files[0]!.path = p))).toThrow(/not a safe relative path/);
      expect(variant((r) => (r.blobs[`sha256:${"b".repeat(64)}`]!.title = p))).toThrow(/not a safe relative path/);
    }
    expect(variant((r) => (r.files[0]!.digest = "sha256:zz"))).toThrow(/not listed/);
    expect(variant((r) => (r.files[0]!.size = 4))).toThrow(/blob size differs/);
    expect(() => parseRecipe(Buffer.from('{"schemaVersion":1,"schemaVersion":1}'), "r")).toThrow(/duplicate key/);
    // files that cannot all be written: a file that is also a folder, names that differ only in case
    const beside = (p: string) => variant((r) => r.files.push({ ...r.files[0]!, path: p }));
    expect(beside("a.txt/b.json")).toThrow(/^r: files cannot all be written: a\.txt is a file and also the directory of a\.txt\/b\.json$/);
    expect(beside("A.TXT")).toThrow(/a\.txt and A\.TXT differ only in case/);
  });
});
