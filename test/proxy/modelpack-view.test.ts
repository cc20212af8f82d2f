/**
 * The proxy's ModelPack view `mp/<org>/<model>:<rev>` over the Hub emulation: oras and modelpack-client
 * pull the repo's own files, byte for byte; a file layer is served assembled from the tensor blobs with
 * Range; gated repos are refused as on `hf/`; and the view is the very artifact `cake push --format
 * modelpack` writes for the same revision.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp, startProxy, type RunningProxy } from "../../proxy/index.js";
import { Store } from "../../src/index.js";
import { hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cakeOk } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { modelPackSchemaErrors } from "../modelpack/schema.js";
import { requireTool, startRegistry, type RunningRegistry } from "../registry/harness.js";

const run = promisify(execFile);
const TOKEN = "hf_mp_alice";
const OCI = "application/vnd.oci.image.manifest.v1+json";
let tmp: string;
let base: string;
let gated: string;
let hub: Hub;
let proxy: RunningProxy;
let reg: RunningRegistry;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-mp-proxy-"));
  base = path.join(tmp, "base");
  gated = path.join(tmp, "gated");
  await makeLlamaLike(base, { hidden: 256, layers: 2, vocab: 2048, shards: 2 });
  await makeLlamaLike(gated, { hidden: 128, layers: 1, vocab: 1024, shards: 1, seed: 7 });
  hub = await startHub({ tokens: { [TOKEN]: { user: "alice", gatedAccess: ["acme/Gated-Llama"] } } });
  hub.addRepo("acme/Tiny-Llama");
  await hub.commit("acme/Tiny-Llama", base, { tags: ["v1.0"] });
  hub.addRepo("acme/Gated-Llama", { gated: true });
  await hub.commit("acme/Gated-Llama", gated);
  proxy = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, "proxy-store"), aliases: { tiny: "acme/Tiny-Llama" }, quiet: true });
  reg = await startRegistry();
});
afterAll(async () => {
  await proxy?.close();
  await reg?.close();
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
function binary(res: request.Response, cb: (err: Error | null, body: Buffer) => void) {
  const chunks: Buffer[] = [];
  const stream = res as unknown as NodeJS.ReadableStream;
  stream.on("data", (c: Buffer) => chunks.push(c));
  stream.on("end", () => cb(null, Buffer.concat(chunks)));
}

interface Manifest {
  artifactType: string;
  config: { digest: string };
  layers: { mediaType: string; digest: string; size: number; annotations: Record<string, string> }[];
}

describe("the mp/ view", () => {
  const app = () => createApp(proxy.service);

  it("oras and modelpack-client pull the repo's files byte-identical; tags, aliases, digests and the config as a registry serves them", async () => {
    const files = await hashTree(base);
    const oras = path.join(tmp, "oras-mp");
    await run(requireTool("oras"), ["pull", "--plain-http", "-o", oras, `${proxy.host}/mp/acme/tiny-llama:main`]);
    expect(await hashTree(oras)).toEqual(files);
    const mp = path.join(tmp, "modelpack-mp");
    await run("modelpack", ["--insecure", "pull", `${proxy.host}/mp/acme/tiny-llama:main`, mp]);
    expect(await hashTree(mp)).toEqual(files);

    const m = await request(app()).get("/v2/mp/acme/tiny-llama/manifests/main").set("Accept", OCI).expect(200);
    expect(m.headers["content-type"]).toBe(OCI);
    const digest = m.headers["docker-content-digest"]!;
    expect(sha256(Buffer.from(m.text))).toBe(digest);
    const manifest = JSON.parse(m.text) as Manifest;
    expect(manifest.artifactType).toBe("application/vnd.cncf.model.manifest.v1+json");
    // the same revision through a tag, the alias, the digest; HEAD as GET; not the hf/ view's digest
    await request(app()).get("/v2/mp/acme/tiny-llama/manifests/v1.0").expect("Docker-Content-Digest", digest);
    await request(app()).get("/v2/mp/tiny/manifests/main").expect("Docker-Content-Digest", digest);
    await request(app()).get(`/v2/mp/acme/tiny-llama/manifests/${digest}`).expect(200).expect("Docker-Content-Digest", digest);
    await request(app()).head("/v2/mp/acme/tiny-llama/manifests/main").expect(200).expect("Docker-Content-Digest", digest);
    const hf = await request(app()).get("/v2/hf/acme/tiny-llama/manifests/main").expect(200);
    expect(hf.headers["docker-content-digest"]).not.toBe(digest);
    expect((await request(app()).get("/v2/mp/acme/tiny-llama/tags/list").expect(200)).body).toEqual({ name: "mp/acme/tiny-llama", tags: ["main", "v1.0"] });
    const config = await request(app()).get(`/v2/mp/acme/tiny-llama/blobs/${manifest.config.digest}`).buffer(true).parse(binary).expect(200);
    expect(sha256(config.body as Buffer)).toBe(manifest.config.digest);
    expect(modelPackSchemaErrors(config.body as Buffer)).toEqual([]);
    // createdAt is the commit's date, as the Hub gives it for the revision (to the second)
    const info = (await (await fetch(`${hub.url}/api/models/acme/Tiny-Llama/revision/main`)).json()) as { lastModified: string };
    const created = (JSON.parse((config.body as Buffer).toString()) as { descriptor: { createdAt: string } }).descriptor.createdAt;
    expect(created).toBe(new Date(info.lastModified).toISOString().replace(/\.\d{3}Z$/, "Z"));
    await request(app()).get(`/v2/mp/acme/tiny-llama/blobs/sha256:${"0".repeat(64)}`).expect(404);
  });

  it("crane and skopeo copy the view into OCI layouts whose blobs are the repo's files", async () => {
    const ref = `${proxy.host}/mp/acme/tiny-llama:main`;
    const digest = (await request(app()).head("/v2/mp/acme/tiny-llama/manifests/main").expect(200)).headers["docker-content-digest"]!;
    const file = await fs.readFile(path.join(base, "model-00002-of-00002.safetensors"));
    const craneDir = path.join(tmp, "crane-mp");
    await run(requireTool("crane"), ["pull", "--insecure", "--format=oci", ref, craneDir]);
    const skopeoDir = path.join(tmp, "skopeo-mp");
    await run(requireTool("skopeo"), ["copy", "--src-tls-verify=false", `docker://${ref}`, `oci:${skopeoDir}:main`]);
    for (const dir of [craneDir, skopeoDir]) {
      const index = JSON.parse(await fs.readFile(path.join(dir, "index.json"), "utf8")) as { manifests: { digest: string }[] };
      expect(index.manifests.map((m) => m.digest), dir).toEqual([digest]);
      expect(Buffer.compare(await fs.readFile(path.join(dir, "blobs", "sha256", sha256(file).slice(7))), file), dir).toBe(0);
    }
  });

  it("serves a safetensors layer assembled from the tensor blobs, with Range (206) and HEAD", async () => {
    const m = JSON.parse((await request(app()).get("/v2/mp/acme/tiny-llama/manifests/main").expect(200)).text) as Manifest;
    const layer = m.layers.find((l) => l.annotations["org.cncf.model.filepath"] === "model-00001-of-00002.safetensors")!;
    const file = await fs.readFile(path.join(base, "model-00001-of-00002.safetensors"));
    expect(layer.digest).toBe(sha256(file));
    const url = `/v2/mp/acme/tiny-llama/blobs/${layer.digest}`;
    const head = await request(app()).head(url).expect(200);
    expect(Number(head.headers["content-length"])).toBe(file.length);
    const whole = await request(app()).get(url).buffer(true).parse(binary).expect(200);
    expect(Buffer.compare(whole.body as Buffer, file)).toBe(0);
    // across the header's end and into the tensors, then one deep inside, then the tail
    const headerEnd = 8 + Number(file.readBigUInt64LE(0));
    for (const [a, b] of [[headerEnd - 100, headerEnd + 5000], [file.length >> 1, (file.length >> 1) + 70_000], [file.length - 10, file.length - 1]] as const) {
      const r = await request(app()).get(url).set("Range", `bytes=${a}-${b}`).buffer(true).parse(binary).expect(206);
      expect(r.headers["content-range"]).toBe(`bytes ${a}-${b}/${file.length}`);
      expect(Buffer.compare(r.body as Buffer, file.subarray(a, b + 1))).toBe(0);
    }
    await request(app()).get(url).set("Range", `bytes=${file.length}-`).expect(416);
  });

  it("serves a file whose tensor blob the store lost: the blob is fetched again from the Hub first", async () => {
    const hf = JSON.parse((await request(app()).get("/v2/hf/acme/tiny-llama/manifests/main").expect(200)).text) as Manifest;
    const recipeDesc = hf.layers.find((l) => l.mediaType === "application/vnd.cake.recipe.v1+json")!;
    const recipe = JSON.parse((await request(app()).get(`/v2/hf/acme/tiny-llama/blobs/${recipeDesc.digest}`).buffer(true).parse(binary).expect(200)).body.toString()) as { files: { path: string; parts?: string[] }[] };
    const shard = recipe.files.find((f) => f.path === "model-00002-of-00002.safetensors")!;
    const lost = shard.parts![shard.parts!.length - 1]!;
    await fs.rm(new Store(path.join(tmp, "proxy-store")).blobPath(lost));
    const file = await fs.readFile(path.join(base, shard.path));
    const r = await request(app()).get(`/v2/mp/acme/tiny-llama/blobs/${sha256(file)}`).buffer(true).parse(binary).expect(200);
    expect(Buffer.compare(r.body as Buffer, file)).toBe(0);
  });

  it("refuses a gated repo's manifest and blobs to anonymous clients, as hf/ does", async () => {
    const anon = await request(app()).get("/v2/mp/acme/gated-llama/manifests/main").expect(401);
    expect(anon.body.errors[0].code).toBe("UNAUTHORIZED");
    const basic = `Basic ${Buffer.from(`alice:${TOKEN}`).toString("base64")}`;
    const ok = await request(app()).get("/v2/mp/acme/gated-llama/manifests/main").set("Authorization", basic).expect(200);
    const man = JSON.parse(ok.text) as Manifest;
    // converted and cached now: still refused without credentials, by tag, by digest and for blobs
    await request(app()).get("/v2/mp/acme/gated-llama/manifests/main").expect(401);
    await request(app()).get(`/v2/mp/acme/gated-llama/manifests/${ok.headers["docker-content-digest"]}`).expect(401);
    await request(app()).get(`/v2/mp/acme/gated-llama/blobs/${man.layers[0]!.digest}`).expect(401);
    await request(app()).get(`/v2/mp/acme/gated-llama/blobs/${man.config.digest}`).expect(401);
    // nor through a public repo's name
    await request(app()).get(`/v2/mp/acme/tiny-llama/blobs/${man.layers[0]!.digest}`).expect(404);
    await request(app()).get(`/v2/mp/acme/gated-llama/blobs/${man.layers[0]!.digest}`).set("Authorization", basic).expect(200);
  });

  it("is the artifact cake push --format modelpack writes for the same revision", async () => {
    const m = await request(app()).get("/v2/mp/acme/tiny-llama/manifests/main").expect(200);
    const env = { CAKE_HOME: path.join(tmp, "client-store"), HF_ENDPOINT: hub.url, HF_TOKEN: "", DOCKER_CONFIG: path.join(tmp, "docker") };
    const pushed = await cakeOk(["push", "-q", "--format", "modelpack", "hf://acme/Tiny-Llama", `${reg.host}/acme/tiny:main`], env);
    expect(pushed).toBe(m.headers["docker-content-digest"]);
  });

  it("holds what modctl's extract needs: every layer .raw or .tar with a relative org.cncf.model.filepath; its blobs written there rebuild the repo", async () => {
    // modctl (modelpack/modctl pkg/backend/extract.go, pkg/codec): for each manifest layer, the codec by
    // the media type's suffix (.raw: the blob is the file; .tar: a tar to unpack) and the file at
    // filepath.Join(output, the org.cncf.model.filepath annotation). Done here as it does it.
    const m = await request(app()).get("/v2/mp/acme/tiny-llama/manifests/main").set("accept", OCI).expect(200);
    const manifest = JSON.parse(m.text) as Manifest;
    const out = path.join(tmp, "modctl-extract");
    for (const l of manifest.layers) {
      expect(l.mediaType.endsWith(".raw") || l.mediaType.endsWith(".tar"), l.mediaType).toBe(true);
      const file = l.annotations["org.cncf.model.filepath"]!;
      expect(file && !path.isAbsolute(file) && !file.split("/").includes(".."), file).toBe(true);
      const blob = await request(app()).get(`/v2/mp/acme/tiny-llama/blobs/${l.digest}`).buffer(true).parse(binary).expect(200);
      await fs.mkdir(path.dirname(path.join(out, file)), { recursive: true });
      await fs.writeFile(path.join(out, file), blob.body as Buffer);
    }
    expect(await hashTree(out)).toEqual(await hashTree(base));
  });
});
