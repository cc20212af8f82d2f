/**
 * A model config read back from a registry is checked before anything uses it (parseConfig), as
 * the recipe is: a hostile one is refused with one line naming the reference, by the library and
 * through the CLI (`cake diff` against a real registry).
 */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/index.js";
import { makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { startRegistry, type RunningRegistry } from "../registry/harness.js";

const CONFIG = "application/vnd.cake.model.config.v1+json";
const good = {
  schemaVersion: 1,
  mediaType: CONFIG,
  source: { type: "hf", repo: "acme/m", commit: "a".repeat(40) },
  layerRule: { threshold: 1, packFactor: 2, maxLayers: 3 },
  files: [{ path: "m.safetensors", size: 10, sha256: "b".repeat(64), format: "safetensors", tensors: [{ name: "w", dtype: "F32", shape: [1], digest: `sha256:${"c".repeat(64)}`, offset: 0, size: 4 }] }],
};
const bytes = (v: unknown) => Buffer.from(JSON.stringify(v));
const withFile = (f: Record<string, unknown>) => ({ ...good, files: [{ ...good.files[0], ...f }] });

describe("parseConfig", () => {
  it("accepts what cake writes and refuses hostile fields, naming them", () => {
    expect(parseConfig(bytes(good), "x").files[0]!.tensors![0]!.name).toBe("w");
    // a tensor's own sha256 (format v1, additive): read when present, not required
    const hashed = withFile({ tensors: [{ ...good.files[0]!.tensors[0], sha256: "d".repeat(64) }] });
    expect(parseConfig(bytes(hashed), "x").files[0]!.tensors![0]!.sha256).toBe("d".repeat(64));
    // another tool's artifact pulled from a registry (src/modelpack/): the repository and the manifest it came from
    const registry = { type: "registry", repository: "127.0.0.1:5000/mp/base", manifest: `sha256:${"e".repeat(64)}` };
    expect(parseConfig(bytes({ ...good, source: registry }), "x").source).toEqual(registry);
    const cases: [unknown, RegExp][] = [
      [{ ...good, mediaType: "application/json" }, /not a cake model config v1/],
      [{ ...good, source: { type: "hf", repo: "acme/m", commit: "HEAD" } }, /source commit is not a 40-hex sha/],
      [{ ...good, source: { type: "registry", repository: "mp", manifest: `sha256:${"e".repeat(64)}` } }, /source repository is not host\/repo/],
      [{ ...good, source: { type: "registry", repository: "h/mp", manifest: "latest" } }, /source manifest is not a sha256 digest/],
      [withFile({ path: "../../etc/passwd" }), /file path/],
      [withFile({ size: -1 }), /bad size/],
      [withFile({ tensors: [{ ...good.files[0]!.tensors[0], offset: 1.5 }] }), /tensor "w": bad offset or size/],
      [withFile({ tensors: [{ ...good.files[0]!.tensors[0], digest: "sha256:../x" }] }), /tensor "w": bad digest/],
      [withFile({ metadata: { a: 1 } }), /metadata is not a map of strings/],
      [withFile({ tensors: [{ ...good.files[0]!.tensors[0], sha256: "C".repeat(64) }] }), /tensor "w": sha256 is not 64 lowercase hex digits/],
      [withFile({ tensors: [{ ...good.files[0]!.tensors[0], sha256: "c".repeat(63) }] }), /tensor "w": sha256 is not 64 lowercase hex digits/],
      [withFile({ tensors: [{ ...good.files[0]!.tensors[0], sha256: null }] }), /tensor "w": sha256 is not 64 lowercase hex digits/],
    ];
    for (const [c, msg] of cases) expect(() => parseConfig(bytes(c), "reg/acme/m:v1 config"), JSON.stringify(c)).toThrow(msg);
  });
});

describe("a hostile config from a registry", () => {
  let reg: RunningRegistry;
  let tmp: string;
  beforeAll(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-config-"));
    reg = await startRegistry();
  });
  afterAll(async () => {
    await reg?.close();
    await fs.rm(tmp, { recursive: true, force: true });
  });

  it("is refused by cake diff with one line", async () => {
    const model = path.join(tmp, "m");
    await makeLlamaLike(model, { hidden: 64, layers: 1, vocab: 256, shards: 1 });
    const env = { CAKE_HOME: path.join(tmp, "store"), DOCKER_CONFIG: path.join(tmp, "docker") };
    expect((await cake(["push", "-q", model, `${reg.host}/acme/m:v1`], env)).code).toBe(0);
    // The same manifest with its config replaced by one whose file escapes the export directory.
    const man = JSON.parse(await (await request(`${reg.url}/v2/acme/m/manifests/v1`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } })).body.text()) as {
      config: { digest: string; size: number };
    };
    const cfg = JSON.parse(await (await request(`${reg.url}/v2/acme/m/blobs/${man.config.digest}`)).body.text()) as { files: { path: string }[] };
    cfg.files[0]!.path = "../../outside.safetensors";
    const hostile = bytes(cfg);
    const digest = `sha256:${createHash("sha256").update(hostile).digest("hex")}`;
    const up = await request(`${reg.url}/v2/acme/m/blobs/uploads/`, { method: "POST" });
    await up.body.dump();
    const loc = new URL(up.headers.location as string, reg.url);
    loc.searchParams.set("digest", digest);
    expect((await request(loc, { method: "PUT", body: hostile, headers: { "content-type": "application/octet-stream" } })).statusCode).toBe(201);
    man.config = { ...man.config, digest, size: hostile.length };
    const put = await request(`${reg.url}/v2/acme/m/manifests/hostile`, { method: "PUT", body: JSON.stringify(man), headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } });
    expect(put.statusCode).toBe(201);

    const r = await cake(["diff", `${reg.host}/acme/m:v1`, `${reg.host}/acme/m:hostile`], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cake: .*acme\/m:hostile config file path.*\n$/);
  });
});
