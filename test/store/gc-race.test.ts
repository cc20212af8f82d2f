/**
 * `cake gc` and the commands that add blobs exclude each other, in both orders: a pull that starts
 * while gc sweeps waits for it (and fetches again what gc took), a gc that starts while a pull runs
 * refuses in one line, and a blob that lands while gc sweeps is never deleted. Either way the model
 * exports byte-identical, and no tag points at a missing blob.
 *
 * And gc keeps what the whole OCI graph reaches, from every index.json entry: a model tagged
 * through an image index (as `cake load` can tag one) keeps its config and layers; a tagged manifest
 * gc cannot read or parse stops it before anything is deleted; entries other tools wrote into the
 * layout (no annotations, other media types) are kept, keep their blobs, and break no command.
 */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { successors } from "../../src/format/graph.js";
import { MT } from "../../src/format/oci.js";
import { Store } from "../../src/store/layout.js";
import { hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake, spawnCake, waitFor } from "../helpers/cli.js";
import { readTar, writeTar } from "../helpers/tar.js";
import { startHub, type Hub } from "../hub/emulator.js";

let hub: Hub;
let tmp: string;
let base: string;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-gc-race-"));
  base = path.join(tmp, "model");
  await makeLlamaLike(base, { hidden: 256, layers: 2, vocab: 1024, shards: 2 });
  hub = await startHub();
  hub.addRepo("acme/tiny-llama");
  await hub.commit("acme/tiny-llama", base);
  // Another model, sharing no tensor with the first: it stays tagged while the first is garbage.
  const keep = path.join(tmp, "keep");
  await makeLlamaLike(keep, { hidden: 64, layers: 1, vocab: 256, shards: 1, seed: 3 });
  hub.addRepo("acme/keep");
  await hub.commit("acme/keep", keep);
});
afterAll(async () => {
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  hub.setKnobs({ bandwidth: 0 });
  hub.counters.reset();
});

let n = 0;
const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
const blobsOf = async (home: string) => (await fs.readdir(path.join(home, "blobs", "sha256"))).sort();
const freshEnv = () => ({ CAKE_HOME: path.join(tmp, `store-${n++}`), HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, `hf-${n}`) });

/** A real gc of `home`, run here, held still after it has looked at the leases and read a tagged manifest, until `resume`. */
async function pausedGc(home: string) {
  let resume!: () => void;
  const gate = new Promise<void>((r) => (resume = r));
  let reached!: () => void;
  const paused = new Promise<void>((r) => (reached = r));
  const done = new Store(home).gc(async (desc, bytes, where) => {
    reached();
    await gate;
    return successors(desc, bytes, where);
  });
  done.catch(() => {}); // awaited by the test
  await paused;
  return { resume, done };
}

/** Waits until a file written now gets a later change time than `file` (file times advance in ticks). */
async function clockPast(file: string) {
  const then = (await fs.stat(file)).ctimeMs;
  const probe = `${file}.probe`;
  for (;;) {
    await fs.writeFile(probe, "");
    const now = (await fs.stat(probe)).ctimeMs;
    await fs.rm(probe);
    if (now > then) return;
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** The model exports byte-identical from the store. */
async function exportsIdentical(env: Record<string, string>, ref: string) {
  const out = path.join(tmp, `out-${n++}`);
  const exp = await cake(["export", "-q", ref, out], env);
  expect(exp.stderr).toBe("");
  expect(exp.code).toBe(0);
  expect(await hashTree(out)).toEqual(await hashTree(base));
}

describe("gc and pulls", () => {
  it("a pull that starts while gc sweeps waits for it, then fetches what gc took: never a tag on missing blobs", async () => {
    const env = freshEnv();
    // The model was pulled and removed: its blobs are garbage this gc deletes; another model stays.
    expect((await cake(["pull", "-q", "hf://acme/tiny-llama"], env)).code).toBe(0);
    expect((await cake(["pull", "-q", "hf://acme/keep"], env)).code).toBe(0);
    expect((await cake(["rm", "-q", "hf://acme/tiny-llama"], env)).code).toBe(0);

    const gc = await pausedGc(env.CAKE_HOME);
    const child = spawnCake(["pull", "hf://acme/tiny-llama"], env);
    let stderr = "";
    child.stderr!.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on("close", r));
    let ended = false;
    void exited.then(() => (ended = true));
    // The pull either waits for gc (and says so) or, as before, went ahead and tagged the blobs gc is about to delete.
    await waitFor(() => ended || stderr.includes("waiting for cake gc"), 30_000, "the pull to wait or end");
    gc.resume();
    const swept = await gc.done;
    expect(swept.removed).toBeGreaterThan(3); // the removed model's tensor blobs, config, recipe and manifest
    expect(await exited).toBe(0);
    await exportsIdentical(env, "hf://acme/tiny-llama");
    expect(stderr).toContain(`${env.CAKE_HOME}: waiting for cake gc (process ${process.pid}) to finish`);
    expect(stderr).toMatch(/hf:\/\/acme\/tiny-llama@main: pulled commit [0-9a-f]{40}/);
  });

  it("a blob that lands while gc sweeps is kept, whatever reaches it", async () => {
    const env = freshEnv();
    expect((await cake(["pull", "-q", "hf://acme/keep"], env)).code).toBe(0);
    const store = new Store(env.CAKE_HOME);
    const old = await store.putBytes(Buffer.from("garbage from before"));
    await clockPast(store.blobPath(old)); // gc keeps what lands in its own clock tick: this one is older
    const gc = await pausedGc(env.CAKE_HOME);
    const landed = await store.putBytes(Buffer.from("written while gc runs, tagged after it"));
    gc.resume();
    expect((await gc.done).removed).toBe(1);
    expect(await store.hasBlob(old)).toBe(false);
    expect(await store.hasBlob(landed)).toBe(true);
  });

  it("a gc that starts while a pull runs refuses in one line; the pull ends whole", async () => {
    const env = freshEnv();
    hub.setKnobs({ bandwidth: 100_000 }); // slow enough that the pull outlasts the gc run below; lifted after it
    const child = spawnCake(["pull", "-q", "-c", "2", "hf://acme/tiny-llama"], env);
    const exited = new Promise<number | null>((r) => child.on("close", r));
    await waitFor(() => hub.counters.bytesServed > 150_000, 30_000, "the pull to be under way");
    const gc = await cake(["gc"], env);
    expect(gc.code).toBe(1);
    expect(gc.stderr).toMatch(new RegExp(`^cake: another cake process \\(${child.pid}\\) is using ${env.CAKE_HOME}; run gc when it ends\\n$`));
    hub.setKnobs({ bandwidth: 0 });
    expect(await exited).toBe(0);
    await exportsIdentical(env, "hf://acme/tiny-llama");
    // And once it has ended, gc runs and keeps the model.
    const after = await cake(["gc"], env);
    expect(after.code).toBe(0);
    await exportsIdentical(env, "hf://acme/tiny-llama");
  });
});

async function pulled(env: Record<string, string>, ref: string): Promise<string> {
  const r = await cake(["pull", "-q", ref], env);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return r.stdout.trim();
}

describe("cake gc follows the whole graph", () => {
  it("keeps a model tagged through an image index: loaded from an archive, gc removes nothing, it exports byte-identical", async () => {
    const env = freshEnv();
    await pulled(env, "hf://acme/tiny-llama");
    const archive = path.join(tmp, "plain.tar");
    expect((await cake(["save", "-q", "hf://acme/tiny-llama", archive], env)).code).toBe(0);

    // The same archive with its manifest wrapped in an image index, the index tagged.
    const entries = await readTar(archive);
    const indexEntry = entries.find((e) => e.header.name === "index.json")!;
    const manifest = (JSON.parse(indexEntry.data.toString()) as { manifests: { mediaType: string; digest: string; size: number }[] }).manifests[0]!;
    const inner = { mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.size };
    const wrapper = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.index, manifests: [inner] }));
    const wrapperDigest = sha256(wrapper);
    indexEntry.data = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.index,
        manifests: [{ mediaType: MT.index, digest: wrapperDigest, size: wrapper.length, annotations: { "org.opencontainers.image.ref.name": "acme/wrapped:v1" } }],
      }),
    );
    const blobEntry = entries.find((e) => e.header.name.startsWith("blobs/sha256/") && e.header.type === "file")!;
    entries.push({ header: { ...blobEntry.header, name: `blobs/sha256/${wrapperDigest.slice(7)}` }, data: wrapper });
    const wrapped = path.join(tmp, "wrapped.tar");
    await writeTar(wrapped, entries);

    const loadEnv = freshEnv();
    const load = await cake(["load", "-q", wrapped], loadEnv);
    expect(load.stderr).toBe("");
    expect(load.stdout).toBe(`registry-1.docker.io/acme/wrapped:v1 ${wrapperDigest}\n`);
    const before = await blobsOf(loadEnv.CAKE_HOME);

    const gc = await cake(["gc"], loadEnv);
    expect(gc.code).toBe(0);
    expect(gc.stderr).toMatch(/^gc: removed 0 blobs \(0 B\), kept \d+\n$/);
    expect(await blobsOf(loadEnv.CAKE_HOME)).toEqual(before);
    // The index's model, tagged directly (export reads a manifest), rebuilds byte for byte.
    await new Store(loadEnv.CAKE_HOME).tag("hf://acme/tiny-llama@main", "hf.co/acme/tiny-llama/main", inner);
    await exportsIdentical(loadEnv, "hf://acme/tiny-llama");
  });

  it("refuses in one line, deleting nothing, when a tagged manifest is unreadable (not JSON, or missing)", async () => {
    for (const damage of ["garbage", "missing"] as const) {
      const env = freshEnv();
      const digest = await pulled(env, "hf://acme/tiny-llama");
      await pulled(env, "hf://acme/keep");
      expect((await cake(["rm", "-q", "hf://acme/keep"], env)).code).toBe(0); // garbage gc would free
      const file = path.join(env.CAKE_HOME, "blobs", "sha256", digest.slice(7));
      if (damage === "garbage") {
        await fs.chmod(file, 0o644);
        await fs.writeFile(file, "not a manifest");
      } else {
        await fs.rm(file);
      }
      const before = await blobsOf(env.CAKE_HOME);

      const gc = await cake(["gc"], env);
      expect(gc.code, damage).toBe(1);
      expect(gc.stderr.trim().split("\n"), damage).toHaveLength(1);
      expect(gc.stderr, damage).toMatch(new RegExp(`^cake: gc: hf://acme/tiny-llama@\\S+: .*${digest}.*; nothing deleted`));
      expect(await blobsOf(env.CAKE_HOME), damage).toEqual(before);
    }
  });

  it("keeps index.json entries other tools wrote (no annotations, other media types): pull, ls, rm and gc work, their blobs stay", async () => {
    const env = freshEnv();
    await pulled(env, "hf://acme/tiny-llama");
    const store = new Store(env.CAKE_HOME);
    // A small foreign image (as skopeo would copy one in, without a ref name) and a foreign blob of another type.
    const config = await store.putBytes(Buffer.from("{}"));
    const layer = await store.putBytes(Buffer.from("a layer of another tool"));
    const image = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.manifest,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config, size: 2 },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layer, size: 23 }],
      }),
    );
    const imageDigest = await store.putBytes(image);
    const note = Buffer.from("some other tool's thing");
    const noteDigest = await store.putBytes(note);
    const indexFile = path.join(env.CAKE_HOME, "index.json");
    const index = JSON.parse(await fs.readFile(indexFile, "utf8")) as { manifests: unknown[] };
    const foreign = [
      { mediaType: MT.manifest, digest: imageDigest, size: image.length },
      { mediaType: "application/vnd.example.note", digest: noteDigest, size: note.length, annotations: { "org.opencontainers.image.ref.name": "note" } },
    ];
    index.manifests.unshift(...foreign);
    await fs.writeFile(indexFile, JSON.stringify(index));

    const pull = await cake(["pull", "-q", "hf://acme/keep"], env);
    expect(pull.stderr).toBe("");
    expect(pull.code).toBe(0);
    const ls = await cake(["ls", "--json"], env);
    expect(ls.stderr).toBe("");
    const refs = (JSON.parse(ls.stdout) as { ref: string }[]).map((m) => m.ref);
    expect(refs).toContain("hf://acme/keep@main");
    expect(refs).toContain("hf://acme/tiny-llama@main");
    expect(refs.every((r) => r.startsWith("hf://acme/"))).toBe(true); // the foreign entries are no cake models
    expect((await cake(["rm", "-q", "hf://acme/keep"], env)).code).toBe(0);
    const gc = await cake(["gc", "-q"], env);
    expect(gc.stderr).toBe("");
    expect(gc.code).toBe(0);
    for (const d of [config, layer, imageDigest, noteDigest]) expect(await store.hasBlob(d)).toBe(true);
    const after = JSON.parse(await fs.readFile(indexFile, "utf8")) as { manifests: unknown[] };
    expect(after.manifests.slice(0, 2)).toEqual(foreign);
    await exportsIdentical(env, "hf://acme/tiny-llama");

    // An entry that is no descriptor at all: listed nowhere, and gc will not guess what it keeps.
    after.manifests.push({ digest: imageDigest });
    await fs.writeFile(indexFile, JSON.stringify(after));
    expect((await cake(["ls"], env)).code).toBe(0);
    const before = await blobsOf(env.CAKE_HOME);
    const refused = await cake(["gc"], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^cake: gc: \S+\/index\.json entry \d+: not a descriptor .*; nothing deleted \(remove that entry from .*index\.json, then gc\)\n$/);
    expect(await blobsOf(env.CAKE_HOME)).toEqual(before);
  });
});
