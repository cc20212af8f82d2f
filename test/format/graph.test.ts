/**
 * The OCI graph (src/format/graph.ts): what a manifest or an index points at, read strictly, and a
 * walk that reaches nested indexes and subjects, each digest once. Bytes that claim to be a manifest
 * or an index and are not one are refused by digest; other media types are leaves.
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { MAX_GRAPH_DEPTH, successors, walkGraph } from "../../src/format/graph.js";
import { MT, type Descriptor } from "../../src/format/oci.js";

/** A document stored under its digest, and its descriptor. */
const docs = new Map<string, Buffer>();
function put(mediaType: string, content: unknown): Descriptor {
  const bytes = Buffer.isBuffer(content) ? content : Buffer.from(JSON.stringify(content));
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  docs.set(digest, bytes);
  return { mediaType, digest, size: bytes.length };
}
const read = async (d: Descriptor) => docs.get(d.digest) ?? Buffer.alloc(0);
const manifestOf = (config: Descriptor, layers: Descriptor[], subject?: Descriptor) =>
  put(MT.manifest, { schemaVersion: 2, mediaType: MT.manifest, config, layers, ...(subject ? { subject } : {}) });
const indexOf = (manifests: Descriptor[], subject?: Descriptor) => put(MT.index, { schemaVersion: 2, mediaType: MT.index, manifests, ...(subject ? { subject } : {}) });

const config = put(MT.config, Buffer.from("{}"));
const layerA = put(MT.tensor, Buffer.from("a"));
const layerB = put(MT.tensor, Buffer.from("b"));

async function reached(root: Descriptor): Promise<string[]> {
  const out: string[] = [];
  await walkGraph(root, read, (d) => void out.push(d.digest));
  return out;
}

describe("successors", () => {
  it("of a manifest: its config, its layers and its subject", async () => {
    const model = manifestOf(config, [layerA, layerB]);
    const empty = put(MT.empty, Buffer.from("{}"));
    const signature = manifestOf(empty, [layerB], model);
    expect(successors(model, await read(model))).toEqual([config, layerA, layerB]);
    expect(successors(signature, await read(signature))).toEqual([empty, layerB, model]);
  });

  it("of an index: its manifests and its subject; of any other media type: nothing", async () => {
    const m1 = manifestOf(config, [layerA]);
    const m2 = manifestOf(config, [layerB]);
    const idx = indexOf([m1, m2], m1);
    expect(successors(idx, await read(idx))).toEqual([m1, m2, m1]);
    expect(successors(layerA, Buffer.from("not JSON at all"))).toEqual([]);
    expect(successors(config, await read(config))).toEqual([]);
  });

  it("refuses bytes that claim to be a manifest or an index and are not one, naming the digest", async () => {
    const bad = (desc: Descriptor, bytes: Buffer) => {
      try {
        successors(desc, bytes);
      } catch (err) {
        return { code: (err as { code?: string }).code, message: (err as Error).message };
      }
      return undefined;
    };
    const digest = `sha256:${"ab".repeat(32)}`;
    const m = { mediaType: MT.manifest, digest, size: 1 };
    const i = { mediaType: MT.index, digest, size: 1 };
    const cases: [Descriptor, unknown, RegExp][] = [
      [m, "not json", /not valid JSON/],
      [m, [1, 2], /not a JSON object/],
      [m, { schemaVersion: 2, layers: [] }, /config: not a descriptor/],
      [m, { schemaVersion: 2, config, layers: [{ digest: "sha256:short", size: 1, mediaType: "x" }] }, /layers\[0\]: not a descriptor/],
      [m, { schemaVersion: 2, config, layers: {} }, /layers is not an array/],
      [m, { schemaVersion: 2, mediaType: MT.index, manifests: [] }, /not an image manifest as its descriptor says/],
      [i, { schemaVersion: 2, mediaType: MT.index }, /manifests is not an array/],
      [i, { schemaVersion: 2, manifests: [config], subject: "sha256:x" }, /subject: not a descriptor/],
    ];
    for (const [desc, content, why] of cases) {
      const e = bad(desc, Buffer.from(typeof content === "string" ? content : JSON.stringify(content)));
      expect(e?.code, why.source).toBe("E_RECIPE");
      expect(e?.message, why.source).toContain(digest);
      expect(e?.message, why.source).toMatch(why);
    }
  });
});

describe("walkGraph", () => {
  it("reaches everything under nested indexes and subjects, each digest once, a node before what it points at", async () => {
    const m1 = manifestOf(config, [layerA]);
    const m2 = manifestOf(config, [layerA, layerB]);
    const inner = indexOf([m1]);
    const outer = indexOf([inner, m2, m1]);
    expect(await reached(outer)).toEqual([outer.digest, inner.digest, m1.digest, config.digest, layerA.digest, m2.digest, layerB.digest]);
    const referrer = manifestOf(config, [], outer);
    expect(await reached(referrer)).toEqual([referrer.digest, config.digest, outer.digest, inner.digest, m1.digest, layerA.digest, m2.digest, layerB.digest]);
  });

  it("fails on a malformed manifest anywhere below, and on indexes nested too deep", async () => {
    const broken = put(MT.manifest, Buffer.from("{ truncated"));
    await expect(reached(indexOf([manifestOf(config, [layerA]), broken]))).rejects.toThrow(new RegExp(`manifest ${broken.digest}: not valid JSON`));
    let deep = manifestOf(config, [layerA]);
    for (let i = 0; i <= MAX_GRAPH_DEPTH; i++) deep = indexOf([deep]);
    await expect(reached(deep)).rejects.toThrow(/nested more than 4 deep/);
  });
});
