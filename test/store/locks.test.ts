/**
 * Cross-process locks: a lock file holds its owner's pid from the moment it exists (a lock seen
 * empty would be taken for stale and taken over), a dead owner's lock is taken over by exactly one
 * of those who find it, and gc sweeps the temp files of dead processes and leaves live ones' alone.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Store } from "../../src/store/layout.js";
import { lockOwner, tryLock, withLock } from "../../src/store/lock.js";

let tmp: string;
/** The pid of a process that has exited. */
let deadPid: number;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-locks-"));
  deadPid = spawnSync(process.execPath, ["-e", "0"]).pid!;
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

describe("store locks", () => {
  it("a lock holds its owner's pid as soon as it exists, and leaves nothing else behind", async () => {
    const dir = await fs.mkdtemp(path.join(tmp, "a-"));
    const lock = path.join(dir, "k.lock");
    expect(await tryLock(lock)).toBe(true);
    expect(await fs.readFile(lock, "utf8")).toBe(String(process.pid));
    expect(await lockOwner(lock)).toBe(process.pid);
    expect(await tryLock(lock)).toBe(false); // held (by a live process)
    expect(await fs.readdir(dir)).toEqual(["k.lock"]);
  });

  it("takes over the lock of a process that is gone", async () => {
    const dir = await fs.mkdtemp(path.join(tmp, "b-"));
    const lock = path.join(dir, "k.lock");
    await fs.writeFile(lock, String(deadPid));
    expect(await lockOwner(lock)).toBeUndefined();
    expect(await tryLock(lock)).toBe(true);
    expect(await fs.readFile(lock, "utf8")).toBe(String(process.pid));
    expect(await fs.readdir(dir)).toEqual(["k.lock"]);
  });

  it("a stale lock found by many at once is taken by one of them", async () => {
    for (const content of [String(deadPid), ""]) {
      const dir = await fs.mkdtemp(path.join(tmp, "c-"));
      const lock = path.join(dir, "k.lock");
      await fs.writeFile(lock, content);
      const took = await Promise.all(Array.from({ length: 16 }, () => tryLock(lock)));
      expect(took.filter(Boolean)).toHaveLength(1);
      expect(await fs.readdir(dir)).toEqual(["k.lock"]);
    }
  });

  it("a stale lock whose breaker was killed too is still taken over, and the dead breaker cleared", async () => {
    const dir = await fs.mkdtemp(path.join(tmp, "d-"));
    const lock = path.join(dir, "k.lock");
    await fs.writeFile(lock, String(deadPid));
    await fs.writeFile(`${lock}.break`, String(deadPid));
    expect(await withLock(lock, "k", () => fs.readFile(lock, "utf8"), 5_000)).toBe(String(process.pid));
    expect(await fs.readdir(dir)).toEqual([]);
  });

  it("gc leaves a lock being written by a live process alone, and removes a dead one's", async () => {
    const store = new Store(path.join(tmp, "store"));
    await store.lease().then((release) => release()); // creates the layout
    const ingest = path.join(store.root, "ingest");
    // Temp names end in a random part; the counter older versions put there is still recognised (in leftovers below).
    const live = `abc.lock.${process.pid}-1-0123456789abcdef.tmp`;
    const dead = `abc.lock.${deadPid}-1-fedcba9876543210.tmp`;
    await fs.writeFile(path.join(ingest, live), String(process.pid));
    await fs.writeFile(path.join(ingest, dead), String(deadPid));
    // a lease, index.json and a ranges file a killed process had written but not renamed into place
    const leftovers = [["cake", `lease.${deadPid}-1-1.tmp`], [`index.json.${deadPid}-1-2.tmp`], ["cake", "ranges", `ab.${deadPid}-1-4.tmp`]];
    for (const p of leftovers) await fs.writeFile(path.join(store.root, ...p), String(deadPid));
    // and a killed registry pull's folder of extracted tar layers (src/modelpack/pull.ts)
    const layers = path.join(ingest, `layers.${deadPid}-1-00112233445566ff.tmp`);
    await fs.mkdir(path.join(layers, "0", "sub"), { recursive: true });
    await fs.writeFile(path.join(layers, "0", "sub", "model.safetensors"), "x");
    const index = await fs.readFile(path.join(store.root, "index.json"), "utf8");
    await store.gc(() => []);
    expect((await fs.readdir(ingest)).sort()).toEqual([live]);
    for (const p of leftovers) await expect(fs.access(path.join(store.root, ...p))).rejects.toThrow();
    expect(await fs.readFile(path.join(store.root, "index.json"), "utf8")).toBe(index);
  });
});
