/**
 * An archive's Hub references are its claim, not the Hub's word: `cake load` never replaces a model
 * the store pulled from the Hub with other content, tags what it loads as unverified, and the next
 * online `cake pull` has the Hub confirm it (the recipe's file hashes against the commit's tree) or
 * replaces it with the Hub's own. The impostor here is another model whose index.json entry claims
 * to be hf://acme/tiny-llama at its real commit.
 */
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { readTar, writeTar } from "../helpers/tar.js";
import { startHub, type Hub } from "../hub/emulator.js";

let hub: Hub;
let tmp: string;
let model: string;
let commit: string;
/** The real model's manifest, as a pull stores it. */
let pulled: string;
/** `cake save` of the pulled model, both its references (@main and @<commit>). */
let genuine: string;
let impostor: string;
let impostorDigest: string;

let n = 0;
const freshHome = () => path.join(tmp, `store-${n++}`);
const env = (home: string, extra: Record<string, string> = {}) => ({ CAKE_HOME: home, HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, "hf"), ...extra });
const listed = async (home: string, ref: string) =>
  (JSON.parse((await cake(["ls", "--json"], env(home))).stdout || "[]") as { ref: string; digest: string; unverified?: true }[]).find((m) => m.ref === ref);
const tagOf = async (home: string, ref: string) => (await listed(home, ref))?.digest;

/** Exports `ref` and says whether it is the Hub's model byte for byte. */
async function exportsModel(home: string, ref: string): Promise<{ same: boolean; stderr: string }> {
  const out = path.join(tmp, `out-${n++}`);
  const r = await cake(["export", "-q", ref, out], env(home));
  expect(r.code).toBe(0);
  return { same: JSON.stringify([...(await hashTree(out))].sort()) === JSON.stringify([...(await hashTree(model))].sort()), stderr: r.stderr };
}

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "cake-archive-trust-"));
  model = path.join(tmp, "model");
  const other = path.join(tmp, "other");
  await makeLlamaLike(model, { hidden: 128, layers: 2, vocab: 512, shards: 2 });
  await makeLlamaLike(other, { hidden: 128, layers: 2, vocab: 512, shards: 2, seed: 7 });
  hub = await startHub();
  hub.addRepo("acme/tiny-llama");
  commit = await hub.commit("acme/tiny-llama", model);
  hub.addRepo("acme/other");
  await hub.commit("acme/other", other);

  const home = freshHome();
  const pull = await cake(["pull", "-q", "hf://acme/tiny-llama"], env(home));
  expect(pull.code).toBe(0);
  pulled = pull.stdout.trim();
  genuine = path.join(tmp, "genuine.tar");
  expect((await cake(["save", "-q", "hf://acme/tiny-llama", `hf://acme/tiny-llama@${commit}`, genuine], env(home))).code).toBe(0);

  // Another model, saved, its index.json entry rewritten to claim the real model's reference and commit.
  const otherHome = freshHome();
  expect((await cake(["pull", "-q", "hf://acme/other"], env(otherHome))).code).toBe(0);
  const saved = path.join(tmp, "other.tar");
  expect((await cake(["save", "-q", "hf://acme/other", saved], env(otherHome))).code).toBe(0);
  const entries = await readTar(saved);
  const index = entries.find((e) => e.header.name === "index.json")!;
  const doc = JSON.parse(index.data.toString()) as { manifests: { digest: string; annotations: Record<string, string> }[] };
  const entry = doc.manifests[0]!;
  impostorDigest = entry.digest;
  Object.assign(entry.annotations, {
    "dev.cake.ref": `hf://acme/tiny-llama@${commit}`,
    "org.opencontainers.image.ref.name": `hf.co/acme/tiny-llama/${commit}`,
    "dev.cake.hf.repo": "acme/tiny-llama",
    "dev.cake.hf.commit": commit,
  });
  index.data = Buffer.from(JSON.stringify(doc));
  impostor = path.join(tmp, "impostor.tar");
  await writeTar(impostor, entries);
});
afterAll(async () => {
  await hub?.close();
  await fsp.rm(tmp, { recursive: true, force: true });
});
beforeEach(() => hub.counters.reset());

describe("cake load and the Hub's word", () => {
  it("refuses an archive that would replace a model pulled from the Hub with other content; the store is unchanged", async () => {
    const home = freshHome();
    expect((await cake(["pull", "-q", "hf://acme/tiny-llama"], env(home))).code).toBe(0);
    const r = await cake(["load", "-q", impostor], env(home));
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `cake: ${impostor}: hf://acme/tiny-llama@${commit} is ${impostorDigest} in the archive, but the store holds ${pulled}, checked against the Hub; ` +
        `not replaced (cake rm hf://acme/tiny-llama@${commit} first, or cake load --trust to take the archive's)\n`,
    );
    expect(await tagOf(home, `hf://acme/tiny-llama@${commit}`)).toBe(pulled);
    expect((await exportsModel(home, `hf://acme/tiny-llama@${commit}`)).same).toBe(true);
    // The genuine archive changes nothing and says nothing is unchecked.
    const same = await cake(["load", genuine], env(home));
    expect(same.code).toBe(0);
    expect(same.stderr).not.toContain("not checked against the Hub");
  });

  it("into an empty store: marked unverified, said at export and offline; the next online pull replaces it with the Hub's", async () => {
    const home = freshHome();
    const load = await cake(["load", impostor], env(home));
    expect(load.code).toBe(0);
    expect(load.stderr).toContain(`${impostor}: hf://acme/tiny-llama@${commit} not checked against the Hub yet`);
    expect(await listed(home, `hf://acme/tiny-llama@${commit}`)).toMatchObject({ digest: impostorDigest, unverified: true });
    const warning = `cake: warning: hf://acme/tiny-llama@${commit} was loaded from an archive and is not checked against the Hub yet; run cake pull hf://acme/tiny-llama@${commit} online to check it\n`;
    const before = await exportsModel(home, `hf://acme/tiny-llama@${commit}`);
    expect(before.same).toBe(false);
    expect(before.stderr).toBe(warning);
    const offline = await cake(["pull", "-q", `hf://acme/tiny-llama@${commit}`], env(home, { HF_HUB_OFFLINE: "1" }));
    expect(offline.code).toBe(0);
    expect(offline.stderr).toContain(warning);

    const pull = await cake(["pull", "hf://acme/tiny-llama"], env(home));
    expect(pull.code).toBe(0);
    expect(pull.stderr).toContain(`hf://acme/tiny-llama@main: the store's copy (${impostorDigest}, loaded from an archive) is not the Hub's commit ${commit}; replaced by the Hub's\n`);
    expect(pull.stdout).toBe(`${pulled}\n`);
    expect(hub.counters.bytesServed).toBeGreaterThan(0);
    expect(await listed(home, `hf://acme/tiny-llama@${commit}`)).not.toHaveProperty("unverified");
    expect(await tagOf(home, `hf://acme/tiny-llama@${commit}`)).toBe(pulled);
    const after = await exportsModel(home, `hf://acme/tiny-llama@${commit}`);
    expect(after).toEqual({ same: true, stderr: "" });
  });

  it("a genuine archive is confirmed by the Hub's tree listing, no file byte fetched again", async () => {
    const home = freshHome();
    expect((await cake(["load", "-q", genuine], env(home))).code).toBe(0);
    const pull = await cake(["pull", "hf://acme/tiny-llama"], env(home));
    expect(pull.code).toBe(0);
    expect(pull.stderr).toContain(`hf://acme/tiny-llama@main: up to date (${commit}); the copy loaded from an archive matches the Hub's files`);
    expect(hub.counters.bytesServed).toBe(0);
    expect(await exportsModel(home, "hf://acme/tiny-llama")).toEqual({ same: true, stderr: "" });
    expect(await exportsModel(home, `hf://acme/tiny-llama@${commit}`)).toEqual({ same: true, stderr: "" });
  });

  it("load --trust takes the archive's references as they are, replacing the store's", async () => {
    const home = freshHome();
    expect((await cake(["pull", "-q", "hf://acme/tiny-llama"], env(home))).code).toBe(0);
    const r = await cake(["load", "--trust", impostor], env(home));
    expect(r.code).toBe(0);
    expect(r.stderr).not.toContain("not checked against the Hub");
    expect(await tagOf(home, `hf://acme/tiny-llama@${commit}`)).toBe(impostorDigest);
  });
});
