/**
 * What the commands print, as a user reads it: a Hub model listed once by `cake ls` (its commit
 * beside it, and in --json), counts in the singular for one, a load's progress without totals it
 * cannot know, and a `cake save` of a model the store lacks creating no store.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeLlamaLike } from "../fixtures/models.js";
import { CAKE, cake } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";

let hub: Hub;
let tmp: string;
let commit: string;
let env: Record<string, string>;

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "cake-output-"));
  const model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 64, layers: 1, vocab: 256 });
  hub = await startHub();
  hub.addRepo("acme/tiny-llama");
  commit = await hub.commit("acme/tiny-llama", model);
  env = { CAKE_HOME: path.join(tmp, "store"), HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, "hf") };
  const r = await cake(["pull", "-q", "hf://acme/tiny-llama"], env);
  expect(r.code).toBe(0);
}, 60_000);
afterAll(async () => {
  await hub?.close();
  await fsp.rm(tmp, { recursive: true, force: true });
});

describe("cake ls", () => {
  it("lists a Hub model once, by the revision pulled, its commit beside it; --json has every tag with its commit", async () => {
    const table = (await cake(["ls"], env)).stdout.trim().split("\n");
    expect(table).toHaveLength(2);
    expect(table[1]).toMatch(new RegExp(`^hf://acme/tiny-llama@main +${commit.slice(0, 12)} `));
    const json = JSON.parse((await cake(["ls", "--json"], env)).stdout) as { ref: string; commit: string }[];
    expect(json.map((m) => [m.ref, m.commit]).sort()).toEqual([
      [`hf://acme/tiny-llama@${commit}`, commit],
      ["hf://acme/tiny-llama@main", commit],
    ]);
  });

  it("lists a commit tag that no revision names", async () => {
    const e = { ...env, CAKE_HOME: path.join(tmp, "by-commit") };
    expect((await cake(["pull", "-q", `hf://acme/tiny-llama@${commit}`], e)).code).toBe(0);
    const table = (await cake(["ls"], e)).stdout.trim().split("\n");
    expect(table.slice(1).map((l) => l.split(" ")[0])).toEqual([`hf://acme/tiny-llama@${commit}`]);
  });
});

describe("save and load", () => {
  it("one model is '1 model'; the load's progress counts blobs, without a total it cannot know", async () => {
    const tar = path.join(tmp, "m.tar");
    const saved = await cake(["save", "hf://acme/tiny-llama", tar], env);
    expect(saved.stderr).toMatch(/^.*m\.tar: hf:\/\/acme\/tiny-llama@main \(\d+ blobs, [\d.]+ KiB\)\n$/);
    const loaded = await cake(["load", tar], { ...env, CAKE_HOME: path.join(tmp, "loaded") });
    expect(loaded.stderr).toMatch(/: 1 model, \d+ new blobs \([\d.]+ KiB\), 0 already in the store\n$/);
    // on a terminal (script(1) gives it one), the progress line
    const tty = spawnSync("script", ["-qec", `${process.execPath} ${CAKE} load ${tar}`, "/dev/null"], { env: { ...process.env, ...env, CAKE_HOME: path.join(tmp, "loaded-tty") }, encoding: "utf8" });
    expect(tty.stdout).toMatch(/load .*m\.tar: [\d.]+ KiB \/ [\d.]+ KiB .* [1-9]\d* blobs/);
    expect(tty.stdout).not.toContain("0/0 blobs");
  });

  it("a save of a model the store lacks creates no store", async () => {
    const home = path.join(tmp, "home");
    const r = await cake(["save", "hf://acme/nope", path.join(tmp, "x.tar")], { ...env, CAKE_HOME: "", HOME: home });
    expect(r.stderr).toBe(`cake: hf://acme/nope: not in the store ${path.join(home, ".cache", "cake")} (run: cake pull hf://acme/nope)\n`);
    expect(r.code).toBe(1);
    expect(fs.existsSync(home)).toBe(false);
  });
});
