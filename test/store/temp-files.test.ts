/**
 * The store never writes through a symbolic link: temp files get names nobody can predict and are
 * created exclusively, and the files with fixed names (partial blobs, journals, ranges, locations,
 * verified marks) are never opened through a link. Checked by what matters to a user: a file
 * outside the store that links planted at every such name point at is never changed.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { sha256Digest } from "../../src/digest.js";
import { MT } from "../../src/format/oci.js";
import { Store } from "../../src/store/layout.js";

let tmp: string;
let victim: string;
const PRECIOUS = "precious, not cake's\n";

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-tempfiles-"));
  victim = path.join(tmp, "victim.txt");
  await fs.writeFile(victim, PRECIOUS);
});
afterAll(async () => {
  vi.restoreAllMocks();
  await fs.rm(tmp, { recursive: true, force: true });
});

/** Links to the victim at `dir/<base>.<pid>-<now>-<n>.tmp` for the first `count` n: the names temp files had when they were pid, time and a counter. */
async function plantAtCounterNames(dir: string, base: string, now: number, count = 100): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  for (let n = 0; n < count; n++) await fs.symlink(victim, path.join(dir, `${base}.${process.pid}-${now}-${n}.tmp`));
}

describe("store temp files and symbolic links", () => {
  it("writes nothing through links planted at the predictable temp names of this process", async () => {
    const store = new Store(path.join(tmp, "store-a"));
    const root = store.root;
    const now = 1_700_000_000_000;
    vi.spyOn(Date, "now").mockReturnValue(now); // the time in the old names, now known in advance
    await plantAtCounterNames(root, "oci-layout", now);
    await plantAtCounterNames(root, "index.json", now);
    await plantAtCounterNames(path.join(root, "ingest"), "bytes", now);
    await plantAtCounterNames(path.join(root, "cake"), "index.lock", now);
    await plantAtCounterNames(path.join(root, "cake"), "lease", now);
    await plantAtCounterNames(path.join(root, "cake"), "gc.lock", now);
    await plantAtCounterNames(path.join(root, "ingest"), "k1.lock", now);

    const release = await store.lease();
    const config = await store.putBytes(Buffer.from("{}"));
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config: { mediaType: "application/json", digest: config, size: 2 }, layers: [] }));
    const digest = await store.putBytes(manifest);
    await store.tag("hf://acme/m@main", "acme/m:main", { mediaType: MT.manifest, digest, size: manifest.length });
    await store.withIngest("k1", 5, async (ing) => {
      await ing.write(0, [Buffer.from("hello")], 0, { n: 0 });
      await ing.record([0, 5]);
      await store.commit(ing, sha256Digest(Buffer.from("hello")));
    });
    await release();
    await store.gc();
    vi.restoreAllMocks();

    expect(await fs.readFile(victim, "utf8")).toBe(PRECIOUS);
    expect(await store.tags()).toHaveLength(1);
    expect((await fs.lstat(path.join(root, "index.json"))).isFile()).toBe(true);
  });

  it("refuses to write through a link at a partial blob, a journal, a ranges or locations file; a verified mark is never opened", async () => {
    const store = new Store(path.join(tmp, "store-b"));
    await store.init();
    const root = store.root;
    const digest = sha256Digest(Buffer.from("m"));
    const link = async (...p: string[]) => {
      await fs.mkdir(path.join(root, ...p.slice(0, -1)), { recursive: true });
      await fs.symlink(victim, path.join(root, ...p));
    };
    await link("cake", "verified", digest.slice("sha256:".length));
    await link("cake", "ranges", "f1");
    await link("cake", "locations", "127.0.0.1_5000");
    await link("ingest", "k2.partial");
    await link("ingest", "k3.journal");

    await store.markVerified(digest);
    await expect(store.recordRange("f1", 0, 5, digest, "acme/m")).rejects.toThrow(/ranges\/f1 is a symbolic link, which cake never writes through: remove it/);
    await expect(store.recordLocations("127.0.0.1:5000", "acme/m", [digest])).rejects.toMatchObject({ code: "E_IO" });
    await expect(store.withIngest("k2", 5, async () => undefined)).rejects.toThrow(/k2\.partial is a symbolic link/);
    await expect(store.withIngest("k3", 5, async () => undefined)).rejects.toThrow(/k3\.journal is a symbolic link/);

    expect(await fs.readFile(victim, "utf8")).toBe(PRECIOUS);
  });
});
