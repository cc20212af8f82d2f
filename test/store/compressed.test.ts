/**
 * The compressed local store, as a user sees it: `cake compress` makes trained-like weights smaller
 * on disk, `ls` and `inspect` say so, export rebuilds the files byte for byte from a store where some
 * blobs are compressed and some not, a corrupt compressed blob is one line naming it, a kill during
 * `cake compress` loses nothing, and `decompress`, `rm` and `gc` handle the compressed form.
 */
import fsSync from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canonicalRef, importDir, Store } from "../../src/index.js";
import { hashTree, writeSafetensorsFile, type GenTensor } from "../fixtures/models.js";
import { cake, cakeOk, spawnCake, waitFor } from "../helpers/cli.js";

let tmp: string;
let model: string;
const REF = "127.0.0.1:1/local/zipped:v1";

/** Trained-like BF16 and F32 tensors, small ones (a pack), random bytes that do not compress, a text file. */
async function makeModel(dir: string, bigTensors = 2): Promise<void> {
  const tensors: GenTensor[] = [
    ...Array.from({ length: bigTensors }, (_, i): GenTensor => ({ name: `layers.${i}.w`, dtype: "BF16", shape: [1024, 1000 + i], normal: true })),
    { name: "f32.w", dtype: "F32", shape: [512, 700], normal: true },
    { name: "random.w", dtype: "BF16", shape: [300, 512], fill: 3 },
    { name: "norm.a", dtype: "F32", shape: [64], normal: true },
    { name: "norm.b", dtype: "BF16", shape: [65], normal: true },
  ];
  await writeSafetensorsFile(path.join(dir, "model.safetensors"), tensors);
  await fs.writeFile(path.join(dir, "tokenizer.json"), JSON.stringify({ vocab: Array.from({ length: 30000 }, (_, i) => `token${i}`) }));
}

async function storeWith(name: string, dir = model): Promise<{ env: { CAKE_HOME: string }; store: Store }> {
  const home = path.join(tmp, name);
  const store = new Store(home);
  await importDir(dir, store, { tag: canonicalRef(REF) });
  return { env: { CAKE_HOME: home }, store };
}

const files = async (dir: string) => (await fs.readdir(dir)).filter((n) => /^[0-9a-f]{64}$/.test(n));

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-compressed-"));
  model = path.join(tmp, "model");
  await makeModel(model);
});
afterAll(() => fs.rm(tmp, { recursive: true, force: true }));

describe("cake compress", () => {
  it("stores trained-like weights smaller, says so in ls and inspect, and exports byte-identical from a mixed store", async () => {
    const { env, store } = await storeWith("plain");
    const r = await cake(["compress", REF], env);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^127\.0\.0\.1:1\/local\/zipped:v1: 4 of 5 layers compressed now, 1 kept as they are \(compression would not make them smaller\); stored .+ of .+ \(\d+ %\)\n$/);
    const compressed = await files(path.join(env.CAKE_HOME, "cake", "compressed"));
    expect(compressed).toHaveLength(4);
    for (const hex of compressed) await expect(fs.access(path.join(env.CAKE_HOME, "blobs", "sha256", hex))).rejects.toThrow();

    const ls = JSON.parse(await cakeOk(["ls", "--json"], env)) as { bytes: number; stored: number }[];
    expect(ls[0]!.stored).toBeLessThan(0.8 * ls[0]!.bytes);
    expect(await cakeOk(["inspect", REF], env)).toMatch(/\nstored {4}\d/);

    // Mixed: one blob back as it is.
    expect(await store.decompressBlob(`sha256:${compressed[0]}`)).toBe("decompressed");
    for (const verify of [[], ["--verify"]]) {
      const out = path.join(tmp, `out-${verify.length}`);
      await cakeOk(["export", "-q", ...verify, REF, out], env);
      expect(await hashTree(out)).toEqual(await hashTree(model));
    }
    // Again: nothing left to do; the one decompressed blob compressed again.
    expect((await cake(["compress", REF], env)).stderr).toMatch(/: 1 of 5 layers compressed now/);
  });

  it("a pack of small BF16 tensors is coded as BF16: stored at most 70 % of raw, like one big tensor", async () => {
    const dir = path.join(tmp, "pack-model");
    await fs.mkdir(dir);
    // 40 tensors of 64 KiB: under the 1 MiB threshold, so one pack layer of 2.5 MiB.
    await writeSafetensorsFile(path.join(dir, "model.safetensors"), Array.from({ length: 40 }, (_, i): GenTensor => ({ name: `layers.${i}.norm`, dtype: "BF16", shape: [128, 256], normal: true })));
    const { env } = await storeWith("pack", dir);
    await cakeOk(["compress", "-q", REF], env);
    expect(await files(path.join(env.CAKE_HOME, "cake", "compressed"))).toHaveLength(1);
    const [l] = JSON.parse(await cakeOk(["ls", "--json"], env)) as { bytes: number; stored: number }[];
    expect(l!.stored / l!.bytes).toBeLessThanOrEqual(0.7);
    const out = path.join(tmp, "pack-out");
    await cakeOk(["export", "-q", REF, out], env);
    expect(await hashTree(out)).toEqual(await hashTree(dir));
  });

  it("a flipped byte in a compressed blob fails the export in one line naming the blob; no file is written", async () => {
    const { env } = await storeWith("corrupt");
    await cakeOk(["compress", "-q", REF], env);
    const dir = path.join(env.CAKE_HOME, "cake", "compressed");
    const hex = (await files(dir))[0]!;
    const file = path.join(dir, hex);
    const bytes = await fs.readFile(file);
    bytes[bytes.length >> 1]! ^= 0x01;
    await fs.chmod(file, 0o644);
    await fs.writeFile(file, bytes);
    const out = path.join(tmp, "corrupt-out");
    const r = await cake(["export", "-q", REF, out], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`blob sha256:${hex} (${file}) is corrupt (frame `);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(await fs.readdir(out).catch(() => [])).not.toContain("model.safetensors");
  });

  it("a kill during cake compress loses nothing: the model exports byte-identical, and a rerun finishes", async () => {
    const big = path.join(tmp, "big");
    await makeModel(big, 24);
    const { env } = await storeWith("killed", big);
    const dir = path.join(env.CAKE_HOME, "cake", "compressed");
    const child = spawnCake(["compress", "-q", REF], env);
    const exited = new Promise((r) => child.on("exit", r));
    // Killed once a few blobs are compressed, while others are being written.
    await waitFor(() => fsSync.readdirSync(dir).length >= 3, 60_000, "3 files in cake/compressed");
    child.kill("SIGKILL");
    await exited;
    expect((await files(dir)).length).toBeLessThan(26); // killed mid-way
    const out = path.join(tmp, "killed-out");
    await cakeOk(["export", "-q", "--verify", REF, out], env);
    expect(await hashTree(out)).toEqual(await hashTree(big));
    await cakeOk(["compress", "-q", REF], env);
    await cakeOk(["gc", "-q"], env); // removes the killed process's temp file
    expect((await fs.readdir(dir)).filter((n) => n.endsWith(".tmp"))).toEqual([]);
    expect(await files(dir)).toHaveLength(26); // the 24 + 1 weights and the tokenizer; the random tensor stays as it is, the pack is too small
    await fs.rm(out, { recursive: true });
    await cakeOk(["export", "-q", "--verify", REF, out], env);
    expect(await hashTree(out)).toEqual(await hashTree(big));
  });

  it("decompress puts every blob back where other tools read the OCI layout; rm and gc remove compressed blobs", async () => {
    const { env } = await storeWith("round");
    const blobs = path.join(env.CAKE_HOME, "blobs", "sha256");
    const before = await files(blobs);
    await cakeOk(["compress", "-q"], env);
    expect((await files(blobs)).length).toBeLessThan(before.length);
    await cakeOk(["decompress", "-q", REF], env);
    expect((await files(blobs)).sort()).toEqual(before.sort());
    expect(await files(path.join(env.CAKE_HOME, "cake", "compressed"))).toEqual([]);

    await cakeOk(["compress", "-q"], env);
    await cakeOk(["rm", "-q", REF], env);
    await cakeOk(["gc", "-q"], env);
    expect(await files(path.join(env.CAKE_HOME, "cake", "compressed"))).toEqual([]);
    expect(await files(blobs)).toEqual([]);
  });
});
