/**
 * The pieces the ModelPack view is made of, without a registry: any byte range of a stored safetensors
 * file read back from its tensor blobs equals the file's bytes; a blob shorter than the recipe says is
 * an error naming the file, never a file cut short; paramSize and precision as the spec writes them.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canonicalRef, importDir, openFileRange, sourceFromStore, Store, type Recipe } from "../../src/index.js";
import { paramSize, precisionOf } from "../../src/modelpack/tensor-stats.js";
import { makeLlamaLike } from "../fixtures/models.js";

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
    const headerEnd = Buffer.from(f.header!, "base64").length;
    const firstPart = recipe.blobs[f.parts![0]!]!.size;
    const cuts = [[0, f.size], [0, 8], [headerEnd - 3, headerEnd + 3], [headerEnd + firstPart - 1, headerEnd + firstPart + 1], [f.size - 1, f.size], [5, 5]];
    for (const [a, b] of cuts) expect(Buffer.compare(await readAll(openFileRange(store, recipe, f, a, b)), file.subarray(a, b)), `${a}-${b}`).toBe(0);
  });

  it("fails naming the file when a blob is shorter than the recipe says", async () => {
    const f = recipe.files.find((x) => x.path === "model.safetensors")!;
    const short = { openBlob: (d: string, start = 0, end?: number) => store.openBlob(d, start, end === undefined ? undefined : Math.max(start, end - 1)) };
    await expect(readAll(openFileRange(short, recipe, f, 0, f.size, "m: model.safetensors"))).rejects.toThrow(/m: model\.safetensors: blob sha256:[a-f0-9]{64} gave \d+ bytes/);
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
