/**
 * The pieces the ModelPack view is made of, without a registry: any byte range of a stored safetensors
 * file read back from its tensor blobs (plain files, compressed ones, or both) equals the file's
 * bytes; a blob shorter than the recipe says, read through the store or from its plain file, is an
 * error naming the file, never a file cut short; paramSize and precision as the spec writes them.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canonicalRef, importDir, openFileRange, sourceFromStore, Store, type Recipe } from "../../src/index.js";
import { paramSize, precisionOf } from "../../src/modelpack/tensor-stats.js";
import { makeLlamaLike, writeSafetensorsFile } from "../fixtures/models.js";

let tmp: string;
let store: Store;
let recipe: Recipe;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-mp-range-"));
  await makeLlamaLike(path.join(tmp, "m"), { hidden: 512, layers: 1, vocab: 2048, shards: 1 });
  store = new Store(path.join(tmp, "store"));
  const ref = canonicalRef("local/m:v1");
  await importDir(path.join(tmp, "m"), store, { tag: ref });
  recipe = (await sourceFromStore(store, ref)).recipe;
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

/** Ranges across the header, the first blob's edges and the file's end. */
function cutsOf(recipe: Recipe, path: string): [number, number][] {
  const f = recipe.files.find((x) => x.path === path)!;
  const headerEnd = Buffer.from(f.header!, "base64").length;
  const firstPart = recipe.blobs[f.parts![0]!]!.size;
  return [[0, f.size], [0, 8], [headerEnd - 3, headerEnd + 3], [headerEnd + firstPart - 1, headerEnd + firstPart + 1], [f.size - 1, f.size], [5, 5]];
}

const readAll = async (s: AsyncIterable<Buffer>) => {
  const parts: Buffer[] = [];
  for await (const b of s) parts.push(b);
  return Buffer.concat(parts);
};

describe("openFileRange", () => {
  it("gives any range of a safetensors file from its header and tensor blobs", async () => {
    const f = recipe.files.find((x) => x.path === "model.safetensors")!;
    expect(f.parts!.length).toBeGreaterThan(1);
    const file = await fs.readFile(path.join(tmp, "m", "model.safetensors"));
    for (const [a, b] of cutsOf(recipe, f.path)) expect(Buffer.compare(await readAll(openFileRange(store, recipe, f, a, b)), file.subarray(a, b)), `${a}-${b}`).toBe(0);
  });

  it("fails naming the file when a blob is shorter than the recipe says", async () => {
    const f = recipe.files.find((x) => x.path === "model.safetensors")!;
    const short = { openBlob: (d: string, start = 0, end?: number) => store.openBlob(d, start, end === undefined ? undefined : Math.max(start, end - 1)) };
    await expect(readAll(openFileRange(short, recipe, f, 0, f.size, "m: model.safetensors"))).rejects.toThrow(/m: model\.safetensors: blob sha256:[a-f0-9]{64} has \d+ bytes, the recipe says \d+/);
  });

  it("fails naming the file when a blob's plain file is shorter than the recipe says", async () => {
    const f = recipe.files.find((x) => x.path === "model.safetensors")!;
    const cut = path.join(tmp, "short-blob");
    const first = f.parts![0]!;
    await fs.writeFile(cut, (await fs.readFile(store.rawFile(first)!)).subarray(1));
    const reader = { openBlob: (d: string, a?: number, b?: number) => store.openBlob(d, a, b), rawFile: (d: string) => (d === first ? cut : store.rawFile(d)) };
    await expect(readAll(openFileRange(reader, recipe, f, 0, f.size, "m: model.safetensors"))).rejects.toThrow(`m: model.safetensors: blob ${first} has ${recipe.blobs[first]!.size - 1} bytes, the recipe says ${recipe.blobs[first]!.size}`);
  });

  it("gives the same bytes when some of the file's blobs are stored compressed", async () => {
    const dir = path.join(tmp, "z");
    await writeSafetensorsFile(path.join(dir, "model.safetensors"), [0, 1, 2, 3].map((i) => ({ name: `layers.${i}.w`, dtype: "BF16", shape: [1024, 1100], normal: true })));
    const zs = new Store(path.join(tmp, "zstore"));
    const ref = canonicalRef("local/z:v1");
    await importDir(dir, zs, { tag: ref });
    const zr = (await sourceFromStore(zs, ref)).recipe;
    const f = zr.files.find((x) => x.path === "model.safetensors")!;
    for (const d of f.parts!.filter((_, i) => i % 2 === 1)) expect(await zs.compressBlob(d, "BF16")).toBe("compressed");
    expect(f.parts!.map((d) => zs.rawFile(d) === undefined)).toEqual([false, true, false, true]);
    const file = await fs.readFile(path.join(dir, "model.safetensors"));
    for (const [a, b] of cutsOf(zr, f.path)) expect(Buffer.compare(await readAll(openFileRange(zs, zr, f, a, b)), file.subarray(a, b)), `${a}-${b}`).toBe(0);
  });
});

describe("ModelPack config figures", () => {
  it("writes paramSize as <count><scale> with one decimal at most, and precisions by bytes", () => {
    const t = (...shape: number[]) => ({ shape });
    expect(paramSize([t(4096, 4096), t(4096)])).toBe("16.8M");
    expect(paramSize([t(7, 1e9)])).toBe("7B");
    expect(paramSize([t(500)])).toBe("0.5K");
    expect(paramSize([t(0)])).toBeUndefined();
    expect(paramSize([t(4)])).toBeUndefined();
    expect(precisionOf([{ dtype: "F32", size: 10 }, { dtype: "BF16", size: 100 }, { dtype: "F8_E4M3", size: 10 }])).toBe("bfloat16,float32,float8_e4m3");
    expect(precisionOf([])).toBeUndefined();
  });
});
