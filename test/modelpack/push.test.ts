/**
 * `cake push --format modelpack` to a real CNCF distribution registry: what ModelPack tools pull back
 * (oras, and the PyPI client `modelpack-client`) is the model's own files, byte for byte; the config
 * passes the spec's JSON schema; the same stored revision gives the same manifest digest.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sourceFromStore, Store } from "../../src/index.js";
import { hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake, cakeOk } from "../helpers/cli.js";
import { requireTool, startRegistry, type RunningRegistry } from "../registry/harness.js";
import { modelPackSchemaErrors } from "./schema.js";

const run = promisify(execFile);
let tmp: string;
let base: string;
let reg: RunningRegistry;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-mp-push-"));
  base = path.join(tmp, "base");
  await makeLlamaLike(base, { hidden: 256, layers: 2, vocab: 2048, shards: 2 });
  reg = await startRegistry();
});
afterAll(async () => {
  await reg?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

let n = 0;
const env = () => ({ CAKE_HOME: path.join(tmp, `store-${n++}`), DOCKER_CONFIG: path.join(tmp, "docker") });
const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

interface Manifest {
  artifactType: string;
  config: { mediaType: string; digest: string };
  layers: { mediaType: string; digest: string; size: number; annotations: Record<string, string> }[];
  annotations: Record<string, string>;
}

async function fetchJson(url: string, accept?: string): Promise<{ bytes: Buffer; digest: string | null }> {
  const res = await fetch(url, accept ? { headers: { accept } } : {});
  expect(res.status, url).toBe(200);
  return { bytes: Buffer.from(await res.arrayBuffer()), digest: res.headers.get("docker-content-digest") };
}

describe("cake push --format modelpack", () => {
  it("writes a ModelPack artifact that oras and modelpack-client pull as the original files", async () => {
    const e = env();
    const digest = await cakeOk(["push", "-q", "--format", "modelpack", base, `${reg.host}/acme/tiny:mp`], e);
    expect(digest).toMatch(/^sha256:[a-f0-9]{64}$/);

    const m = await fetchJson(`${reg.url}/v2/acme/tiny/manifests/mp`, "application/vnd.oci.image.manifest.v1+json");
    expect(m.digest).toBe(digest);
    const manifest = JSON.parse(m.bytes.toString()) as Manifest;
    expect(manifest.artifactType).toBe("application/vnd.cncf.model.manifest.v1+json");
    expect(manifest.config.mediaType).toBe("application/vnd.cncf.model.config.v1+json");
    const files = await hashTree(base);
    // one raw layer per file, its digest the file's sha256, its path in both annotations
    expect(manifest.layers.map((l) => l.annotations["org.cncf.model.filepath"]).sort()).toEqual([...files.keys()].sort());
    for (const l of manifest.layers) {
      const p = l.annotations["org.cncf.model.filepath"]!;
      expect(l.annotations["org.opencontainers.image.title"]).toBe(p);
      expect(l.digest).toBe(`sha256:${files.get(p)}`);
      expect(l.mediaType).toBe(
        p.endsWith(".safetensors") ? "application/vnd.cncf.model.weight.v1.raw" : p === "README.md" ? "application/vnd.cncf.model.doc.v1.raw" : "application/vnd.cncf.model.weight.config.v1.raw",
      );
    }
    // the config: valid against the spec's schema, the weights described from their headers
    const config = await fetchJson(`${reg.url}/v2/acme/tiny/blobs/${manifest.config.digest}`);
    expect(sha256(config.bytes)).toBe(manifest.config.digest);
    expect(modelPackSchemaErrors(config.bytes)).toEqual([]);
    const c = JSON.parse(config.bytes.toString()) as { config: Record<string, string>; modelfs: { diffIds: string[] }; descriptor: { createdAt: string } };
    expect(c.config).toEqual({ format: "safetensors", paramSize: expect.stringMatching(/^\d+(\.\d)?M$/), precision: "bfloat16,float16,float32,int64" });
    expect(c.modelfs.diffIds).toEqual(manifest.layers.map((l) => l.digest));
    expect(c.descriptor.createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    const orasDir = path.join(tmp, "oras-out");
    await run(requireTool("oras"), ["pull", "--plain-http", "-o", orasDir, `${reg.host}/acme/tiny:mp`]);
    expect(await hashTree(orasDir)).toEqual(files);

    const mpDir = path.join(tmp, "modelpack-out");
    await run("modelpack", ["--insecure", "pull", `${reg.host}/acme/tiny:mp`, mpDir]);
    expect(await hashTree(mpDir)).toEqual(files);
  });

  it("is deterministic: the same revision gives the same digest, from any store, and a second push uploads nothing", async () => {
    const e1 = env();
    const first = await cakeOk(["push", "-q", "--format", "modelpack", base, `${reg.host}/acme/det:a`], e1);
    const again = await cake(["push", "--format", "modelpack", `${reg.host}/acme/det:a`, `${reg.host}/acme/det:a`], e1);
    expect(again.code).toBe(0);
    expect(again.stdout.trim()).toBe(first);
    expect(again.stderr).toMatch(/: 0 blobs uploaded \(0 B\), 0 mounted, \d+ already there/);
    // another repository of the same registry: every blob (files and config) is mounted, none uploaded again
    const mirror = await cake(["push", "--format", "modelpack", `${reg.host}/acme/det:a`, `${reg.host}/mirror/det:a`], e1);
    expect(mirror.stdout.trim()).toBe(first);
    expect(mirror.stderr).toMatch(/: 0 blobs uploaded \(0 B\), [1-9]\d* mounted, 0 already there/);
    // another store, converted again from the same folder
    expect(await cakeOk(["push", "-q", "--format", "modelpack", base, `${reg.host}/acme/det:b`], env())).toBe(first);
    // the default format stays cake's per-tensor artifact
    const cakeDigest = await cakeOk(["push", "-q", base, `${reg.host}/acme/det:cake`], env());
    expect(cakeDigest).not.toBe(first);
    const m = JSON.parse((await fetchJson(`${reg.url}/v2/acme/det/manifests/a`, "application/vnd.oci.image.manifest.v1+json")).bytes.toString()) as Manifest;
    expect(m.annotations["dev.cake.model.manifest"]).toBe(cakeDigest);
  });

  it("gives two files with the same bytes a layer each (one blob), which both tools write at both paths", async () => {
    const dir = path.join(tmp, "twins");
    await fs.mkdir(path.join(dir, "sub"), { recursive: true });
    await fs.writeFile(path.join(dir, "a.json"), "{}\n");
    await fs.writeFile(path.join(dir, "sub", "b.json"), "{}\n");
    await fs.writeFile(path.join(dir, "empty.txt"), "");
    const digest = await cakeOk(["push", "-q", "--format", "modelpack", dir, `${reg.host}/acme/twins:v1`], env());
    const m = JSON.parse((await fetchJson(`${reg.url}/v2/acme/twins/manifests/${digest}`, "application/vnd.oci.image.manifest.v1+json")).bytes.toString()) as Manifest;
    expect(m.layers.map((l) => l.annotations["org.cncf.model.filepath"])).toEqual(["a.json", "empty.txt", "sub/b.json"]);
    expect(m.layers[0]!.digest).toBe(m.layers[2]!.digest);
    const files = await hashTree(dir);
    const orasDir = path.join(tmp, "twins-oras");
    await run(requireTool("oras"), ["pull", "--plain-http", "-o", orasDir, `${reg.host}/acme/twins:v1`]);
    expect(await hashTree(orasDir)).toEqual(files);
    const mpDir = path.join(tmp, "twins-mp");
    await run("modelpack", ["--insecure", "pull", `${reg.host}/acme/twins:v1`, mpDir]);
    expect(await hashTree(mpDir)).toEqual(files);
  });

  it("says which file's blob the store lacks, and pushes no manifest", async () => {
    const e = env();
    await cakeOk(["push", "-q", "--format", "modelpack", base, `${reg.host}/acme/lost:v1`], e);
    const store = new Store(e.CAKE_HOME);
    const { recipe } = await sourceFromStore(store, `${reg.host}/acme/lost:v1`);
    const shard = recipe.files.find((f) => f.parts)!;
    await fs.rm(store.blobPath(shard.parts![0]!));
    const r = await cake(["push", "--format", "modelpack", `${reg.host}/acme/lost:v1`, `${reg.host}/acme/lost2:v1`], e);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`blob ${shard.parts![0]} of ${shard.path} is missing from the store (pull it again)`);
    expect((await fetch(`${reg.url}/v2/acme/lost2/manifests/v1`)).status).toBe(404);
  });

  it("refuses an unknown format with one line", async () => {
    const r = await cake(["push", "--format", "gguf", base, `${reg.host}/acme/x:v1`], env());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--format.*gguf.*(cake|modelpack)/);
  });
});
