/**
 * `cake export` all or nothing: a failure (a damaged or missing blob) leaves nothing new behind, a
 * folder that holds files is written into only with --force, and a file where the folder should be
 * is one line. Each as a user meets it: the built binary, its exit code and its one line.
 */
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sourceFromStore } from "../../src/model/source.js";
import { Store } from "../../src/store/layout.js";
import { hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";

let hub: Hub;
let tmp: string;
let model: string;

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "cake-export-atomic-"));
  model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 128, layers: 2, vocab: 512, shards: 2 });
  hub = await startHub();
  hub.addRepo("acme/small");
  await hub.commit("acme/small", model);
}, 60_000);
afterAll(async () => {
  await hub?.close();
  await fsp.rm(tmp, { recursive: true, force: true });
});

let n = 0;
/** A fresh store holding hf://acme/small; its env. */
async function pulled(): Promise<Record<string, string>> {
  const env = { CAKE_HOME: path.join(tmp, `store-${n++}`), HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, `hf-${n}`) };
  const r = await cake(["pull", "-q", "hf://acme/small"], env);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return env;
}

/** The store file of the blob holding `file`'s last tensor (for a safetensors file, its last part). */
async function blobOf(env: Record<string, string>, file: string): Promise<{ digest: string; path: string }> {
  const store = new Store(env.CAKE_HOME);
  const src = await sourceFromStore(store, "hf://acme/small");
  const f = src.recipe.files.find((x) => x.path === file)!;
  const digest = f.digest ?? f.parts!.at(-1)!;
  return { digest, path: store.rawFile(digest)! };
}

describe("export, all or nothing", () => {
  it("a damaged blob: the export fails and leaves no folder, no file, no temp folder", async () => {
    const env = await pulled();
    const blob = await blobOf(env, "model-00002-of-00002.safetensors");
    await fsp.chmod(blob.path, 0o644);
    await fsp.truncate(blob.path, 10); // shorter than the recipe says
    const parent = path.join(tmp, "damaged");
    await fsp.mkdir(parent);
    const r = await cake(["export", "-q", "hf://acme/small", path.join(parent, "out")], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cake: hf:\/\/acme\/small: blob sha256:[0-9a-f]{64} for model-00002-of-00002\.safetensors has 10 bytes, the recipe says \d+\n$/);
    expect(fs.readdirSync(parent)).toEqual([]);
  });

  it("a missing blob: one line naming it and what to run, and nothing new, not even the parent folders it made", async () => {
    const env = await pulled();
    const blob = await blobOf(env, "model-00001-of-00002.safetensors");
    await fsp.rm(blob.path, { force: true });
    const out = path.join(tmp, "missing", "a", "out");
    const r = await cake(["export", "-q", "hf://acme/small", out], env);
    expect(r.stderr).toBe(`cake: hf://acme/small: blob ${blob.digest} (of model-00001-of-00002.safetensors) is missing: pull hf://acme/small again\n`);
    expect(r.code).toBe(1);
    expect(fs.existsSync(path.join(tmp, "missing"))).toBe(false);
  });

  it("a folder that holds files: refused, naming it and --force; with --force the files land, the rest stays", async () => {
    const env = await pulled();
    const out = path.join(tmp, "full");
    await fsp.mkdir(out);
    await fsp.writeFile(path.join(out, "notes.txt"), "mine\n");
    await fsp.writeFile(path.join(out, "config.json"), "old\n");
    const r = await cake(["export", "-q", "hf://acme/small", out], env);
    expect(r.stderr).toBe(`cake: ${out}: folder is not empty: export into a new folder, or add --force to replace its files of the same names\n`);
    expect(r.code).toBe(2);
    expect(fs.readdirSync(out).sort()).toEqual(["config.json", "notes.txt"]);
    expect(fs.readFileSync(path.join(out, "config.json"), "utf8")).toBe("old\n");

    const forced = await cake(["export", "-q", "--force", "hf://acme/small", out], env);
    expect(forced.stderr).toBe("");
    expect(forced.code).toBe(0);
    expect(fs.readFileSync(path.join(out, "notes.txt"), "utf8")).toBe("mine\n");
    await fsp.rm(path.join(out, "notes.txt"));
    expect(await hashTree(out)).toEqual(await hashTree(model));
  });

  it("--force into a folder where a file stands at a folder the export needs: refused before anything moves", async () => {
    const env = await pulled();
    const out = path.join(tmp, "blocked");
    await fsp.mkdir(out);
    await fsp.mkdir(path.join(out, "config.json")); // a folder where a file goes
    const r = await cake(["export", "-q", "--force", "hf://acme/small", out], env);
    expect(r.stderr).toBe(`cake: ${path.join(out, "config.json")} is a folder where the export puts a file: move it away and export again\n`);
    expect(r.code).toBe(2);
    expect(fs.readdirSync(out)).toEqual(["config.json"]);
  });

  it("into an empty folder, no --force needed; onto a file, or below one, one line", async () => {
    const env = await pulled();
    const empty = path.join(tmp, "empty");
    await fsp.mkdir(empty);
    expect((await cake(["export", "-q", "hf://acme/small", empty], env)).code).toBe(0);
    expect(await hashTree(empty)).toEqual(await hashTree(model));

    const file = path.join(tmp, "a-file");
    await fsp.writeFile(file, "x");
    const onto = await cake(["export", "-q", "hf://acme/small", file], env);
    expect(onto.stderr).toBe(`cake: ${file} is a file: export into a new or empty folder\n`);
    expect(onto.code).toBe(2);
    const below = await cake(["export", "-q", "hf://acme/small", path.join(file, "out")], env);
    expect(below.stderr).toBe(`cake: ${path.join(file, "out")}: a file stands on its path: export into a folder\n`);
    expect(below.code).toBe(2);
    expect(fs.readFileSync(file, "utf8")).toBe("x");
  });

  it("--help names what ref-or-dir may be and that out is required", async () => {
    const r = await cake(["export", "--help"], {});
    expect(r.stdout).toContain("Usage: cake export [options] <ref-or-dir> <out>");
    expect(r.stdout).toMatch(/ref-or-dir +a model in the store \(hf:\/\/org\/name\[@rev\], host\/repo:tag\), an\s+OCI\s+layout[^]*folder written by oras pull/);
    expect(r.stdout).toMatch(/out +required: a new or empty folder/);
  });
});
