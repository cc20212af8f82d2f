/**
 * A tree listing the Hub (or something posing as it) gets wrong: `Link: next` that loops, or paths
 * that cannot all be files of one folder. The pull refuses at listing time, in one line naming the
 * listing or the paths, instead of asking forever or failing half-way through an export.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { startHub, type Hub } from "./emulator.js";

let tmp: string;
let hub: Hub;
const REPO = "acme/listed";

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-listing-"));
  const model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 64, layers: 1, vocab: 256, shards: 2 });
  hub = await startHub({ pageSize: 2 });
  await hub.commit(REPO, model);
});
afterAll(async () => {
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});
beforeEach(() => hub.setKnobs({ treePage: undefined }));

let n = 0;
const pull = () => cake(["pull", "-q", `hf://${REPO}`], { CAKE_HOME: path.join(tmp, `store-${n++}`), HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, "hf") });

/** The pull fails with exactly one line, matching `says`. */
async function refused(says: RegExp): Promise<string> {
  const r = await pull();
  expect(r.code).toBe(1);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toMatch(says);
  return r.stderr;
}

describe("a tree listing that loops", () => {
  it("a next page that links back to the first: refused at once", async () => {
    let first: string | undefined;
    let pages = 0;
    hub.setKnobs({
      treePage: (p) => {
        pages++;
        first ??= p.next?.replace(/([?&])cursor=[^&]*&?/, "$1").replace(/[?&]$/, "");
        return { entries: p.entries, next: first };
      },
    });
    await refused(/hf:\/\/acme\/listed@[0-9a-f]{40} tree listing: the next page links back to a page already read/);
    expect(pages).toBeLessThanOrEqual(3);
  }, 30_000);

  it("next pages without end (a new URL each time): stops after 1000 pages", async () => {
    let pages = 0;
    hub.setKnobs({ treePage: () => ({ entries: [], next: `${hub.url}/api/models/${REPO}/tree/main?recursive=true&loop=${++pages}` }) });
    await refused(/tree listing: more than 1000 pages; refused/);
    expect(pages).toBe(1000);
  }, 60_000);
});

describe("a tree listing whose paths cannot all be files", () => {
  /** Adds to every page an entry made from its first. */
  const adding = (made: (e: { path: string }) => object) =>
    hub.setKnobs({ treePage: (p) => ({ ...p, entries: p.entries.length ? [...p.entries, made(p.entries[0] as { path: string })] : p.entries }) });

  it("the same path twice", async () => {
    adding((e) => ({ ...e }));
    await refused(/the tree listing cannot be files of one folder: (\S+) is listed twice/);
  });

  it("a file beside a folder of the same name (a and a/b.json)", async () => {
    adding((e) => ({ ...e, path: `${e.path}/b.json` }));
    await refused(/cannot be files of one folder: (\S+) is a file and also the directory of \1\/b\.json/);
  });

  it("names that differ only in case", async () => {
    adding((e) => ({ ...e, path: e.path.toUpperCase() }));
    await refused(/cannot be files of one folder: (\S+) and \S+ differ only in case/);
  });
});
