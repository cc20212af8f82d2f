/**
 * `cake export` from OCI image layouts written by the real crane (`crane pull --format oci`) and
 * skopeo (`skopeo copy … oci:DIR:tag`): a cake artifact and a CNCF ModelPack artifact, rebuilt byte
 * for byte without the store.
 */
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake, cakeOk } from "../helpers/cli.js";
import { requireTool, startRegistry, type RunningRegistry } from "../registry/harness.js";
import { orasPushModelPack } from "./peers.js";

let tmp: string;
let model: string;
let reg: RunningRegistry;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-mp-layout-"));
  model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 256, layers: 2, vocab: 1024, shards: 2 });
  reg = await startRegistry();
  await orasPushModelPack(model, `${reg.host}/mp/model:v1`, path.join(tmp, "work"));
  await cakeOk(["push", "-q", model, `${reg.host}/cake/model:v1`], env());
}, 60_000);
afterAll(async () => {
  await reg?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

const env = () => ({ CAKE_HOME: path.join(tmp, "store"), DOCKER_CONFIG: path.join(tmp, "docker") });

describe("cake export from an OCI image layout", () => {
  it("of a ModelPack artifact written by crane pull --format oci: every file byte-identical, each hashed", async () => {
    const layout = path.join(tmp, "crane-mp");
    execFileSync(requireTool("crane"), ["pull", "--insecure", "--format", "oci", `${reg.host}/mp/model:v1`, layout], { stdio: "pipe" });
    const out = path.join(tmp, "out-crane-mp");
    const r = await cake(["export", layout, out], env());
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("8 files written");
    expect(r.stderr).toContain("each hashed and matched against its sha256");
    expect(await hashTree(out)).toEqual(await hashTree(model));
  });

  it("of a cake artifact written by skopeo copy oci:DIR:tag, named by its tag", async () => {
    const layout = path.join(tmp, "skopeo-cake");
    const sk = spawnSync(requireTool("skopeo"), ["copy", "--src-tls-verify=false", `docker://${reg.host}/cake/model:v1`, `oci:${layout}:v1`], { encoding: "utf8" });
    expect(sk.status, sk.stderr).toBe(0);
    const out = path.join(tmp, "out-skopeo-cake");
    await cakeOk(["export", "-q", `${layout}:v1`, out], env());
    expect(await hashTree(out)).toEqual(await hashTree(model));
    // and of a ModelPack artifact in the same layout, beside it
    const mp = spawnSync(requireTool("skopeo"), ["copy", "--src-tls-verify=false", `docker://${reg.host}/mp/model:v1`, `oci:${layout}:mp`], { encoding: "utf8" });
    expect(mp.status, mp.stderr).toBe(0);
    const out2 = path.join(tmp, "out-skopeo-mp");
    await cakeOk(["export", "-q", `${layout}:mp`, out2], env());
    expect(await hashTree(out2)).toEqual(await hashTree(model));
    // two manifests and no tag: one line naming the tags to choose from
    const r = await cake(["export", layout, path.join(tmp, "out-none")], env());
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`cake: ${layout}: 2 manifests in the layout; name one as ${layout}:<tag> (tags: v1, mp)`);
  });

  it("refuses a layout whose file was changed after it was written: one line, no file left", async () => {
    const layout = path.join(tmp, "crane-bad");
    execFileSync(requireTool("crane"), ["pull", "--insecure", "--format", "oci", `${reg.host}/mp/model:v1`, layout], { stdio: "pipe" });
    const idx = JSON.parse(await fs.readFile(path.join(layout, "index.json"), "utf8")) as { manifests: { digest: string }[] };
    const manifest = JSON.parse(await fs.readFile(path.join(layout, "blobs/sha256", idx.manifests[0]!.digest.slice(7)), "utf8")) as { layers: { digest: string; annotations: Record<string, string> }[] };
    const cfg = manifest.layers.find((l) => l.annotations["org.cncf.model.filepath"] === "config.json")!;
    const blob = path.join(layout, "blobs/sha256", cfg.digest.slice(7));
    const bytes = await fs.readFile(blob);
    bytes[2] = bytes[2]! ^ 1;
    await fs.chmod(blob, 0o644);
    await fs.writeFile(blob, bytes);
    const out = path.join(tmp, "out-bad");
    const r = await cake(["export", layout, out], env());
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/config\.json/);
    expect(await fs.readdir(out).catch(() => [])).not.toContain("config.json");
  });
});
