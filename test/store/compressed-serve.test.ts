/**
 * A store with compressed blobs serves everything that reads blobs: `pull --compress` from the Hub,
 * a fine-tune pulled beside a compressed base (its guesses and file checks read the base's
 * compressed blobs), and `cake proxy` answering oras, crane and Range requests byte-identical from
 * a store where some blobs are compressed and some not.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { request as httpGet } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compressModel, Store } from "../../src/index.js";
import { startProxy, type RunningProxy } from "../../proxy/index.js";
import { hashTree, makeFineTune, writeSafetensorsFile } from "../fixtures/models.js";
import { cake, cakeOk } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { requireTool } from "../registry/harness.js";

const run = promisify(execFile);
let tmp: string;
let base: string;
let ft: string;
let hub: Hub;
let proxy: RunningProxy;
let n = 0;
const env = () => ({ CAKE_HOME: path.join(tmp, `client-${n++}`), HF_ENDPOINT: hub.url, HF_TOKEN: "" });
const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-compressed-serve-"));
  base = path.join(tmp, "base");
  ft = path.join(tmp, "ft");
  await writeSafetensorsFile(path.join(base, "model.safetensors"), [
    ...[0, 1, 2].map((i) => ({ name: `layers.${i}.w`, dtype: "BF16", shape: [1024, 1100], normal: true })),
    { name: "head.w", dtype: "F32", shape: [600, 600], normal: true },
    { name: "norm.a", dtype: "F32", shape: [64], normal: true },
    { name: "norm.b", dtype: "BF16", shape: [64], normal: true },
  ]);
  await fs.writeFile(path.join(base, "config.json"), JSON.stringify({ model_type: "llama" }));
  await makeFineTune(base, ft, ["layers.1.w"]);
  hub = await startHub({});
  hub.addRepo("acme/zip");
  await hub.commit("acme/zip", base);
  hub.addRepo("acme/zip-ft");
  await hub.commit("acme/zip-ft", ft);
  proxy = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, "proxy-store"), aliases: {}, quiet: true });
});
afterAll(async () => {
  await proxy?.close();
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

describe("pull --compress", () => {
  it("keeps the pulled layers compressed, and a fine-tune pulled beside them reuses them and exports byte-identical", async () => {
    const e = { ...env(), CAKE_COMPRESS: "" };
    const r = await cake(["pull", "-q", "--compress", "hf://acme/zip"], e);
    expect(r.code).toBe(0);
    const [model] = JSON.parse(await cakeOk(["ls", "--json"], e)) as { bytes: number; stored: number }[];
    expect(model!.stored).toBeLessThan(0.75 * model!.bytes);
    expect((await fs.readdir(path.join(e.CAKE_HOME, "cake", "compressed"))).length).toBe(4);

    // CAKE_COMPRESS=1: the default for the store.
    const ftPull = await cake(["pull", "hf://acme/zip-ft"], { ...e, CAKE_COMPRESS: "1" });
    expect(ftPull.code).toBe(0);
    expect(ftPull.stderr).toMatch(/taken from the store/);
    // Its own tensor (random bytes in this fixture) does not compress; the rest are the base's, compressed already.
    expect(ftPull.stderr).toMatch(/hf:\/\/acme\/zip-ft@main: 0 of 4 layers compressed now, 1 kept as they are/);
    for (const [ref, dir] of [["hf://acme/zip", base], ["hf://acme/zip-ft", ft]] as const) {
      const out = path.join(tmp, `export-${n++}`);
      await cakeOk(["export", "-q", "--verify", ref, out], e);
      expect(await hashTree(out)).toEqual(await hashTree(dir));
    }
  });
});

describe("cake proxy from a mixed store", () => {
  it("serves oras, crane and Range reads byte-identical when some blobs are compressed", async () => {
    const ref = `${proxy.host}/hf/acme/zip:main`;
    const oras = requireTool("oras");
    await run(oras, ["pull", "--plain-http", "-o", path.join(tmp, "oras-warm"), ref]); // the proxy converts it
    const store = new Store(path.join(tmp, "proxy-store"));
    const [tag] = await store.tags();
    const r = await compressModel(store, tag!.ref);
    expect(r.changed).toBe(4);
    // Mixed: one back as it is.
    const { stdout } = await run(requireTool("crane"), ["manifest", "--insecure", ref]);
    const layers = (JSON.parse(stdout) as { layers: { digest: string; size: number }[] }).layers;
    const compressed = (await fs.readdir(path.join(store.root, "cake", "compressed"))).map((h) => `sha256:${h}`);
    expect(await store.decompressBlob(compressed[0]!)).toBe("decompressed");

    const dir = path.join(tmp, "oras");
    await run(oras, ["pull", "--plain-http", "-o", dir, ref]);
    const out = path.join(tmp, "oras-out");
    await cakeOk(["export", "-q", dir, out], env());
    expect(await hashTree(out)).toEqual(await hashTree(base));

    const craneDir = path.join(tmp, "crane");
    await run(requireTool("crane"), ["pull", "--insecure", "--format=oci", ref, craneDir]);
    for (const l of layers) expect(sha256(await fs.readFile(path.join(craneDir, "blobs", "sha256", l.digest.slice(7))))).toBe(l.digest);

    // A Range across a frame edge (1 MiB) of a compressed blob.
    const big = layers.find((l) => compressed.slice(1).includes(l.digest) && l.size > (2 << 20) + 8)!;
    const whole = await fs.readFile(path.join(craneDir, "blobs", "sha256", big.digest.slice(7)));
    const [from, to] = [(1 << 20) - 5, (2 << 20) + 7];
    const res = await httpGet(`${proxy.url}/v2/hf/acme/zip/blobs/${big.digest}`, { headers: { range: `bytes=${from}-${to}` } });
    expect(res.statusCode).toBe(206);
    expect(Buffer.from(await res.body.arrayBuffer()).equals(whole.subarray(from, to + 1))).toBe(true);
  });
});
