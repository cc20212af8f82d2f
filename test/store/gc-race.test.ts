/**
 * `cake gc` and the commands that add blobs exclude each other, in both orders: a pull that starts
 * while gc sweeps waits for it (and fetches again what gc took), a gc that starts while a pull runs
 * refuses in one line, and a blob that lands while gc sweeps is never deleted. Either way the model
 * exports byte-identical, and no tag points at a missing blob.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { successors } from "../../src/format/graph.js";
import { Store } from "../../src/store/layout.js";
import { hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake, spawnCake, waitFor } from "../helpers/cli.js";
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
