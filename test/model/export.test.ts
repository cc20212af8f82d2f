/**
 * `cake export` and the files it writes: never through a link planted in the target folder (at a
 * temp name it once used, or at a file's own name), nothing left behind by a killed export once the
 * next one ran, and `--hf-cache --verify` mending a damaged blob the HF cache already held.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exportTo, exportToHfCache, hfCacheRepoDir } from "../../src/model/export.js";
import { sourceFromStore } from "../../src/model/source.js";
import { Store } from "../../src/store/layout.js";
import { hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake, spawnCake, waitFor } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";

let hub: Hub;
let tmp: string;
let small: string;
let smallCommit: string;
let big: string;
let victim: string;
const PRECIOUS = "precious, not cake's\n";

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "cake-export-"));
  small = path.join(tmp, "small");
  big = path.join(tmp, "big");
  await makeLlamaLike(small, { hidden: 128, layers: 2, vocab: 512, shards: 2 });
  // Big enough (about 220 MB) that an export is still writing when it is killed.
  await makeLlamaLike(big, { hidden: 1024, layers: 4, vocab: 32000, shards: 4 });
  hub = await startHub();
  hub.addRepo("acme/small");
  smallCommit = await hub.commit("acme/small", small);
  hub.addRepo("acme/big");
  await hub.commit("acme/big", big);
  victim = path.join(tmp, "victim.txt");
  await fsp.writeFile(victim, PRECIOUS);
}, 120_000);
afterAll(async () => {
  await hub?.close();
  await fsp.rm(tmp, { recursive: true, force: true });
});

let n = 0;
async function pulled(ref: string): Promise<Record<string, string>> {
  const env = { CAKE_HOME: path.join(tmp, `store-${n++}`), HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, `hf-${n}`) };
  const r = await cake(["pull", "-q", ref], env);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return env;
}

/** Links to the victim at every name an export of `names` into `dir` in this process once wrote first (`.<name>.cake-<pid>-<n>.tmp`). */
async function plantAtOldTempNames(dir: string, names: string[]): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  for (const name of names) for (let k = 0; k < 64; k++) await fsp.symlink(victim, path.join(dir, `.${name}.cake-${process.pid}-${k}.tmp`));
}

describe("export and links planted in its target folder", () => {
  it("writes nothing through links at the temp names it once used or at the files' own names; each file lands as a plain file", async () => {
    const env = await pulled("hf://acme/small");
    const names = fs.readdirSync(small);
    for (const verify of [false, true]) {
      const out = path.join(tmp, `out-links-${verify}`);
      await plantAtOldTempNames(out, names);
      for (const name of names) await fsp.symlink(victim, path.join(out, name));
      await exportTo(await sourceFromStore(new Store(env.CAKE_HOME), "hf://acme/small"), out, { verify, force: true });
      expect(await fsp.readFile(victim, "utf8")).toBe(PRECIOUS);
      for (const name of names) expect((await fsp.lstat(path.join(out, name))).isFile(), name).toBe(true);
      const files = [...(await hashTree(out))].filter(([p]) => names.includes(p)); // the planted links are listed too
      expect(new Map(files)).toEqual(await hashTree(small));
    }
  });

  it("into the HF cache: a link at a blob is replaced (and said), one at refs/<revision> is not written through", async () => {
    const env = await pulled("hf://acme/small");
    const hubCache = path.join(tmp, "hf-links");
    const repoDir = hfCacheRepoDir(hubCache, "acme/small");
    const src = await sourceFromStore(new Store(env.CAKE_HOME), "hf://acme/small");
    const etags = src.recipe.files.map((f) => (f.lfs || !f.gitOid ? f.sha256 : f.gitOid!));
    await plantAtOldTempNames(path.join(repoDir, "blobs"), etags);
    await fsp.symlink(victim, path.join(repoDir, "blobs", etags[0]!));
    await fsp.mkdir(path.join(repoDir, "refs"));
    await fsp.symlink(victim, path.join(repoDir, "refs", "main"));
    const warned: string[] = [];
    const snap = await exportToHfCache(src, hubCache, "acme/small", smallCommit, "main", { warn: (l) => warned.push(l) });
    expect(await fsp.readFile(victim, "utf8")).toBe(PRECIOUS);
    expect(await fsp.readFile(path.join(repoDir, "refs", "main"), "utf8")).toBe(smallCommit);
    expect((await fsp.lstat(path.join(repoDir, "refs", "main"))).isFile()).toBe(true);
    expect((await fsp.lstat(path.join(repoDir, "blobs", etags[0]!))).isFile()).toBe(true);
    expect(warned).toEqual([`HF cache blob ${path.join(repoDir, "blobs", etags[0]!)} (${src.recipe.files[0]!.path}) is not a plain file: replaced with the model's own bytes`]);
    expect(await hashTree(snap)).toEqual(await hashTree(small));
  });

  it("refuses a folder on the way that is a link (refs -> elsewhere), before writing anything", async () => {
    const env = await pulled("hf://acme/small");
    const repoDir = hfCacheRepoDir(path.join(tmp, "hf-dirlink"), "acme/small");
    const elsewhere = path.join(tmp, "elsewhere");
    await fsp.mkdir(elsewhere);
    await fsp.mkdir(repoDir, { recursive: true });
    await fsp.symlink(elsewhere, path.join(repoDir, "refs"));
    const src = await sourceFromStore(new Store(env.CAKE_HOME), "hf://acme/small");
    await expect(exportToHfCache(src, path.join(tmp, "hf-dirlink"), "acme/small", smallCommit, "main")).rejects.toThrow(
      `${path.join(repoDir, "refs")} is a symbolic link, which cake never writes through: remove it and export again`,
    );
    expect(await fsp.readdir(elsewhere)).toEqual([]);
    expect(await fsp.readdir(path.join(repoDir, "blobs"))).toEqual([]);
  });
});

/** What is in `dir`, hidden entries and subfolders included, beyond `names`. */
const strays = (dir: string, names: string[]) => (fs.readdirSync(dir, { recursive: true }) as string[]).filter((e) => !names.includes(e));
/** Bytes in the stray files of `dir` (0 while the export has not started writing). */
const strayBytes = (dir: string, names: string[]) =>
  strays(dir, names).reduce((sum, e) => {
    const st = fs.lstatSync(path.join(dir, e), { throwIfNoEntry: false });
    return sum + (st?.isFile() ? st.size : 0);
  }, 0);

describe("export killed mid-way", () => {
  it("leaves temp files that the next export into that folder removes; the files come out byte-identical", async () => {
    const env = await pulled("hf://acme/big");
    const names = fs.readdirSync(big);
    const out = path.join(tmp, "out-killed");
    await fsp.mkdir(out);
    // --verify hashes while writing: slower, so the kill lands while temp files hold bytes.
    const child = spawnCake(["export", "-q", "--verify", "hf://acme/big", out], env);
    await waitFor(() => strayBytes(out, names) > 0, 60_000, "a temp file with bytes in it");
    child.kill("SIGKILL");
    await new Promise((r) => child.on("close", r));
    expect(strays(out, names)).not.toEqual([]); // what the kill left

    const again = await cake(["export", "-q", "hf://acme/big", out], env);
    expect(again.stderr).toBe("");
    expect(again.code).toBe(0);
    expect(fs.readdirSync(out, { recursive: true }).sort()).toEqual([...names].sort());
    expect(await hashTree(out)).toEqual(await hashTree(big));
  });
});

describe("export --hf-cache --verify", () => {
  it("rehashes the blobs the HF cache already holds and replaces a damaged one, saying so in one line", async () => {
    const env = await pulled("hf://acme/small");
    const first = await cake(["export", "-q", "--hf-cache", "hf://acme/small"], env);
    expect(first.code).toBe(0);
    const snap = first.stdout.trim();
    // Flip one byte of the biggest file's blob: same size, other bytes.
    const biggest = fs.readdirSync(small).sort((a, b) => fs.statSync(path.join(small, b)).size - fs.statSync(path.join(small, a)).size)[0]!;
    const blob = fs.realpathSync(path.join(snap, biggest));
    const fh = await fsp.open(blob, "r+");
    const byte = Buffer.alloc(1);
    await fh.read(byte, 0, 1, 1000);
    byte.writeUInt8(byte.readUInt8(0) ^ 0xff, 0);
    await fh.write(byte, 0, 1, 1000);
    await fh.close();
    expect(await hashTree(snap)).not.toEqual(await hashTree(small));

    const verify = await cake(["export", "-q", "--hf-cache", "--verify", "hf://acme/small"], env);
    expect(verify.code).toBe(0);
    expect(verify.stderr).toMatch(new RegExp(`^cake: warning: HF cache blob ${blob} \\(${biggest}\\) hashes to sha256 [0-9a-f]{64}, not [0-9a-f]{64}: replaced with the model's own bytes\\n$`));
    expect(await hashTree(snap)).toEqual(await hashTree(small));
    // huggingface_hub reads it back (offline, from the cache).
    const py = spawnSync("python3", ["-c", "from huggingface_hub import snapshot_download; print(snapshot_download('acme/small'))"], {
      env: { ...process.env, HF_HOME: env.HF_HOME, HF_HUB_OFFLINE: "1", HF_HUB_DISABLE_TELEMETRY: "1", HF_ENDPOINT: "http://127.0.0.1:9" },
      encoding: "utf8",
    });
    expect(py.status).toBe(0);
    expect(py.stdout.trim()).toBe(snap);
  });
});
