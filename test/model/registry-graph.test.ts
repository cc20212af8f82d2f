/**
 * `cake pull` and `cake push` copy the whole OCI graph of what they name (oras-go's copy): a
 * referrer that oras attached to a model brings the model (its `subject`) along, gc keeps it, and a
 * push of the referrer puts the model's manifest in the destination first.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MT } from "../../src/format/oci.js";
import { Store } from "../../src/store/layout.js";
import { hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { requireTool, startRegistry, type RunningRegistry } from "../registry/harness.js";

let tmp: string;
let base: string;
let reg: RunningRegistry;
let n = 0;
const env = () => ({ CAKE_HOME: path.join(tmp, `store-${n++}`), DOCKER_CONFIG: path.join(tmp, "docker") });
const ok = async (args: string[], e: Record<string, string>) => {
  const r = await cake(args, e);
  expect(r.stderr, args.join(" ")).toBe("");
  expect(r.code, args.join(" ")).toBe(0);
  return r.stdout.trim();
};

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-registry-graph-"));
  base = path.join(tmp, "base");
  await makeLlamaLike(base, { hidden: 64, layers: 1, vocab: 256, shards: 2 });
  reg = await startRegistry();
});
afterAll(async () => {
  await reg?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

/** The model under `manifest` in the store at `home`, tagged directly (export reads a manifest), rebuilds `base` byte for byte. */
async function exportsBase(e: Record<string, string>, manifest: string) {
  const store = new Store(e.CAKE_HOME);
  await store.tag("hf://acme/subject@main", "hf.co/acme/subject/main", { mediaType: MT.manifest, digest: manifest, size: (await store.blobSize(manifest))! });
  const out = path.join(tmp, `out-${n++}`);
  await ok(["export", "-q", "hf://acme/subject@main", out], e);
  expect(await hashTree(out)).toEqual(await hashTree(base));
}

describe("registry pull and push follow the graph", () => {
  it("a referrer oras attached to a model: pull brings the model, gc keeps it, push carries it to another repository", async () => {
    const model = await ok(["push", "-q", base, `${reg.host}/acme/signed:v1`], env());
    await fs.writeFile(path.join(tmp, "note.txt"), "reviewed");
    const referrer = execFileSync(
      requireTool("oras"),
      ["attach", "--plain-http", "--artifact-type", "application/vnd.example.note", "--format", "go-template", "--template", "{{.digest}}", `${reg.host}/acme/signed:v1`, "note.txt:text/plain"],
      { cwd: tmp },
    )
      .toString()
      .trim();
    expect(referrer).toMatch(/^sha256:[a-f0-9]{64}$/);

    const e = env();
    expect(await ok(["pull", "-q", `${reg.host}/acme/signed@${referrer}`], e)).toBe(referrer);
    const gc = await cake(["gc"], e);
    expect(gc.code).toBe(0);
    expect(gc.stderr).toMatch(/^gc: removed 0 blobs/);

    await ok(["push", "-q", `${reg.host}/acme/signed@${referrer}`, `${reg.host}/acme/copy:note`], e);
    const fresh = env();
    expect(await ok(["pull", "-q", `${reg.host}/acme/copy@${model}`], fresh)).toBe(model);
    await exportsBase(e, model);
    await exportsBase(fresh, model);
  });
});
