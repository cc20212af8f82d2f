/**
 * Index artifacts: `cake index push` of a model pulled from the Hub emulation to a real CNCF
 * distribution, read back by `readModelIndex` as the units `planUnits` cuts for the same files (each
 * unit's digest the hash of exactly those bytes); a missing, unreachable or lying entry is
 * `undefined` and one warning line naming the entry, never an error.
 */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sha256Digest } from "../../src/digest.js";
import { MT, type ImageManifest } from "../../src/format/oci.js";
import { planUnits, sortFiles, type ModelFile } from "../../src/format/plan.js";
import { parseSafetensors } from "../../src/format/safetensors.js";
import { readModelIndex } from "../../src/model/index-artifact.js";
import { clientFor } from "../../src/model/registry-pull.js";
import { Store } from "../../src/store/layout.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { freePort, startRegistry, type RunningRegistry } from "../registry/harness.js";

let hub: Hub;
let reg: RunningRegistry;
let tmp: string;
let base: string;
let commit: string;
const REPO = "Acme/Tiny-Llama";
const OTHER = "0".repeat(40);

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-index-"));
  base = path.join(tmp, "tiny-llama");
  await makeLlamaLike(base, { hidden: 512, layers: 2, vocab: 4096, shards: 2 });
  hub = await startHub();
  hub.addRepo(REPO);
  commit = await hub.commit(REPO, base);
  reg = await startRegistry();
});
afterAll(async () => {
  await hub?.close();
  await reg?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

let n = 0;
const env = () => ({ CAKE_HOME: path.join(tmp, `store-${n++}`), HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, "hf"), DOCKER_CONFIG: path.join(tmp, "docker") });
const read = (prefix: string, repo = REPO, at = commit) => {
  const warnings: string[] = [];
  return readModelIndex(prefix, repo, at, {}, (l) => warnings.push(l)).then((index) => ({ index, warnings }));
};

/** The units planUnits cuts for the model's files, with the digest of each unit's bytes. */
async function plannedUnits() {
  const files: ModelFile[] = [];
  const bytesOf = new Map<string, Buffer>();
  for (const name of await fs.readdir(base)) {
    const bytes = await fs.readFile(path.join(base, name));
    bytesOf.set(name, bytes);
    const f: ModelFile = { path: name, size: bytes.length };
    if (name.endsWith(".safetensors")) {
      const header = parseSafetensors(bytes, name);
      f.safetensors = { headerBytes: bytes.subarray(0, header.dataStart), header };
    }
    files.push(f);
  }
  const plan = planUnits(sortFiles(files));
  return { plan, units: plan.units.map((u) => ({ path: u.path, begin: u.begin, end: u.end, digest: sha256Digest(bytesOf.get(u.path)!.subarray(u.begin, u.end)) })), bytesOf };
}

/** Publishes an edited copy of the index entry under `tag`: its config or recipe rewritten. */
async function publishEdited(tag: string, edit: { config?: (c: Record<string, unknown>) => void; recipe?: (r: { files: Array<{ path: string }> }) => void }) {
  const client = clientFor(reg.host);
  const repository = `index/${REPO.toLowerCase()}`;
  const m = JSON.parse((await client.getManifest(repository, commit)).bytes.toString()) as ImageManifest;
  const rewrite = async (desc: { digest: string; size: number }, change?: (v: never) => void) => {
    if (!change) return desc;
    const doc = JSON.parse((await client.readBlob(repository, desc.digest, 1 << 26)).toString()) as never;
    change(doc);
    const bytes = Buffer.from(JSON.stringify(doc));
    const d = { digest: sha256Digest(bytes), size: bytes.length };
    await client.pushBlob(repository, d, () => Readable.from([bytes]));
    return { ...desc, ...d };
  };
  m.config = { ...m.config, ...(await rewrite(m.config, edit.config)) };
  m.layers = [{ ...m.layers[0]!, ...(await rewrite(m.layers[0]!, edit.recipe)) }];
  await client.putManifest(repository, tag, Buffer.from(JSON.stringify(m)), MT.manifest);
}

describe("index artifacts", () => {
  it("cake index push publishes config + recipe tagged by commit; readModelIndex gives the planned units", async () => {
    const e = env();
    const r = await cake(["index", "push", `hf://${REPO}`, `${reg.host}/index`], e);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`${reg.host}/index/acme/tiny-llama:${commit}: index of hf://${REPO}@${commit} pushed`);
    expect(r.stdout).toMatch(/^sha256:[a-f0-9]{64}\n$/);

    // On the registry: one manifest, tagged by the commit, of the index type, with no tensor bytes.
    const client = clientFor(reg.host);
    expect(await client.listTags("index/acme/tiny-llama")).toEqual([commit]);
    const got = await client.getManifest("index/acme/tiny-llama", commit);
    expect(got.digest).toBe(r.stdout.trim());
    const m = JSON.parse(got.bytes.toString()) as ImageManifest;
    expect(m.artifactType).toBe(MT.modelIndex);
    expect(m.config.mediaType).toBe(MT.config);
    expect(m.layers.map((l) => l.mediaType)).toEqual([MT.recipe]);

    const { index, warnings } = await read(`${reg.host}/index`);
    expect(warnings).toEqual([]);
    expect(index!.ref).toBe(`${reg.host}/index/acme/tiny-llama:${commit}`);
    expect(index!.manifestDigest).toBe(got.digest);
    const { plan, units, bytesOf } = await plannedUnits();
    expect(index!.threshold).toBe(plan.threshold);
    expect(index!.files.flatMap((f) => f.units.map((u) => ({ path: f.path, ...u })))).toEqual(units);
    expect(units.some((u) => u.begin > 0)).toBe(true); // safetensors units, after their header
    for (const f of index!.files) {
      expect(f.size).toBe(bytesOf.get(f.path)!.length);
      expect(f.sha256).toBe(createHash("sha256").update(bytesOf.get(f.path)!).digest("hex"));
    }
    // The digests are the pulled artifact's layers.
    const store = new Store(e.CAKE_HOME);
    const pulled = JSON.parse((await store.readBlob((await store.resolve(`hf://${REPO}@${commit}`))!.digest)).toString()) as ImageManifest;
    const layers = new Set(pulled.layers.map((l) => l.digest));
    for (const u of units) expect(layers.has(u.digest)).toBe(true);
  });

  it("a full model artifact (a proxy's hf/ manifest, a backend's) serves as an index too", async () => {
    const e = env();
    const r = await cake(["push", "-q", `hf://${REPO}`, `${reg.host}/full/acme/tiny-llama:${commit}`], e);
    expect(r.code, r.stderr).toBe(0);
    const { index, warnings } = await read(`${reg.host}/full`);
    expect(warnings).toEqual([]);
    expect(index!.files.flatMap((f) => f.units.map((u) => ({ path: f.path, ...u })))).toEqual((await plannedUnits()).units);
  });

  it("no entry, or no registry: undefined and one warning line naming the entry", async () => {
    const missing = await read(`${reg.host}/index`, REPO, OTHER);
    expect(missing.index).toBeUndefined();
    expect(missing.warnings).toEqual([`index ${reg.host}/index/acme/tiny-llama:${OTHER}: no such entry`]);
    const port = await freePort();
    const down = await read(`127.0.0.1:${port}/index`);
    expect(down.index).toBeUndefined();
    expect(down.warnings).toHaveLength(1);
    expect(down.warnings[0]).toMatch(new RegExp(`^index 127\\.0\\.0\\.1:${port}/index/acme/tiny-llama:${commit}: GET http://[^ ]+: connect ECONNREFUSED`));
  });

  it("a lying entry (another repo or commit, hostile paths) is undefined with a warning saying why", async () => {
    // The entry of `commit` tagged as another commit: its config says which it is.
    await publishEdited(OTHER, {});
    const other = await read(`${reg.host}/index`, REPO, OTHER);
    expect(other.index).toBeUndefined();
    expect(other.warnings).toEqual([`index ${reg.host}/index/acme/tiny-llama:${OTHER}: its config is of ${REPO}@${commit}, not ${REPO}@${OTHER}`]);
    // The same path in lower case is another Hub repo.
    const cased = await read(`${reg.host}/index`, "acme/tiny-llama");
    expect(cased.index).toBeUndefined();
    expect(cased.warnings[0]).toContain(`its config is of ${REPO}@${commit}, not acme/tiny-llama@${commit}`);

    const evil = "1".repeat(40);
    await publishEdited(evil, {
      config: (c) => ((c.source as { commit: string }).commit = evil),
      recipe: (r) => (r.files[0]!.path = "../../etc/passwd"),
    });
    const hostile = await read(`${reg.host}/index`, REPO, evil);
    expect(hostile.index).toBeUndefined();
    expect(hostile.warnings).toEqual([`index ${reg.host}/index/acme/tiny-llama:${evil}: file path "../../etc/passwd" is not a safe relative path: '..' component`]);
  });

  it("a bad --index or CAKE_INDEX is one usage line, before anything is fetched", async () => {
    const flag = await cake(["pull", "hf://acme/x", "--index", "localhost:5000"], env());
    expect(flag.code).toBe(2);
    expect(flag.stderr).toBe(`cake: --index "localhost:5000": want REGISTRY/prefix (host[:port]/path, no tag), e.g. localhost:5000/index\n`);
    const fromEnv = await cake(["pull", "hf://acme/x"], { ...env(), CAKE_INDEX: "localhost:5000/index:v1" });
    expect(fromEnv.code).toBe(2);
    expect(fromEnv.stderr).toContain(`CAKE_INDEX "localhost:5000/index:v1": want REGISTRY/prefix`);
  });
});
