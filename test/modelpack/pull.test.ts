/**
 * `cake pull` of other tools' model artifacts (CNCF ModelPack pushed by the real oras, Docker Model
 * Runner and KitOps layouts made by hand) from a real CNCF distribution registry, stored as cake
 * models: what a user sees (exit codes, lines, exported bytes) and what crosses the wire (a counting
 * proxy in front of the registry).
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseHeader, readHeaderLength } from "../../src/format/safetensors.js";
import { hashTree, makeFineTune, makeLlamaLike } from "../fixtures/models.js";
import { cake, cakeOk } from "../helpers/cli.js";
import { startCountingProxy, type CountingProxy } from "../registry/counting-proxy.js";
import { startRegistry, type RunningRegistry } from "../registry/harness.js";
import { MP_ARTIFACT, MP_CONFIG, makeTar, orasPushModelPack, pushHandMade } from "./peers.js";

let tmp: string;
let base: string;
let ft: string;
let reg: RunningRegistry;
let proxy: CountingProxy;
const CHANGED = ["model.layers.1.mlp.down_proj.weight", "lm_head.weight"];

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-mp-"));
  base = path.join(tmp, "base");
  ft = path.join(tmp, "ft");
  await makeLlamaLike(base, { hidden: 512, layers: 2, vocab: 4096, shards: 2 });
  await makeFineTune(base, ft, CHANGED);
  reg = await startRegistry();
  proxy = await startCountingProxy(reg.url);
  await orasPushModelPack(base, `${reg.host}/mp/base:v1`, path.join(tmp, "work"));
  await orasPushModelPack(ft, `${reg.host}/mp/ft:v1`, path.join(tmp, "work"));
}, 60_000);
afterAll(async () => {
  await proxy?.close();
  await reg?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

let n = 0;
const env = () => ({ CAKE_HOME: path.join(tmp, `store-${n++}`), DOCKER_CONFIG: path.join(tmp, "docker") });
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
