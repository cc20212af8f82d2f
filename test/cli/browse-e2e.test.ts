/**
 * `cake browse` end to end: the built binary in a real terminal (tmux, 160x40) against the Hub
 * emulation, driven with keys and read off the screen as a user would: search, open a model, pull it
 * (the progress bar counting the real engine's tensors), see it in the local list, quit.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeLlamaLike } from "../fixtures/models.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { CAKE, cake } from "../helpers/cli.js";
import { shq as q, terminal } from "../helpers/tmux.js";

let hub: Hub;
let tmp: string;
let commit: string;
const term = terminal(`cake-browse-e2e-${process.pid}`);
const { screen, keys, text, until } = term;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-browse-e2e-"));
  const model = path.join(tmp, "tiny-llama");
  await makeLlamaLike(model, { hidden: 256, layers: 2, vocab: 2048, shards: 2 });
  hub = await startHub();
  hub.addRepo("acme/tiny-llama");
  commit = await hub.commit("acme/tiny-llama", model);
  hub.addRepo("acme/bert-mini");
  await hub.commit("acme/bert-mini", model);
});
afterAll(async () => {
  term.close();
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

/** Starts `cake browse` in a fresh tmux session and waits until it reads keys (the first frame can come before raw mode). */
async function startBrowse(env: Record<string, string>): Promise<void> {
  const assignments = Object.entries(env).map(([k, v]) => `${k}=${q(v)}`).join(" ");
  const shell = `env ${assignments} ${q(process.execPath)} ${q(CAKE)} browse; echo "cake exited $?"; sleep 600`;
  term.start("browse", 160, 40, shell);
  await until("empty: search (/) and pull (p) a model");
  for (let tries = 1; ; tries++) {
    keys("/");
    try {
      await until("Search: _", 3_000);
      break;
    } catch (err) {
      if (tries >= 5) throw err;
      keys("Escape");
    }
  }
  keys("Escape");
  await until("Search: press / and type");
}

describe("cake browse in a terminal", () => {
  it("takes keys that arrive in one burst one by one: a pasted /bert, then / Backspace×4 tiny Enter in one write", async () => {
    const env = { HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, "hf"), CAKE_HOME: path.join(tmp, "store-burst") };
    await startBrowse(env);
    try {
      text("/bert"); // a paste: one write
      await until("Search: bert_");
      keys("Enter");
      await until(/│ hf:\/\/acme\/bert-mini/);
      // one send-keys: one write to the terminal, as a fast typist: / (the box holds "bert"), 4 Backspaces, tiny, Enter
      keys("/", "BSpace", "BSpace", "BSpace", "BSpace", "tiny", "Enter");
      await until("Search: tiny   (/ to change)");
      await until(/│ hf:\/\/acme\/tiny-llama/);
      keys("q");
      await until("cake exited 0");
    } finally {
      term.kill("browse");
    }
  });

  it("searches the Hub, opens a model, pulls it with a progress bar, lists it, quits", async () => {
    const env = { HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, "hf"), CAKE_HOME: path.join(tmp, "store") };
    await startBrowse(env);
    expect(screen()).toContain("Local store (0)");
    keys("/");
    text("llama");
    await until("Search: llama_");
    keys("Enter");
    await until("Results (1)");
    expect(screen()).toMatch(/│ hf:\/\/acme\/tiny-llama +0 dl {2}0 likes {2}\d{4}-\d{2}-\d{2}/);
    expect(screen()).not.toContain("hf://acme/bert-mini");

    keys("Enter");
    await until("on the Hub");
    expect(screen()).toContain(`commit ${commit}`);
    expect(screen()).toMatch(/model-00001-of-00002\.safetensors +2\.\d MiB {2}safetensors/);

    // slowed down so the bar is on screen while the engine reports tensors
    hub.setKnobs({ bandwidth: 1 << 20 });
    try {
      keys("p");
      await until(/pull hf:\/\/acme\/tiny-llama \[[#-]+\] \d+% {2}[\d.]+ (B|KiB|MiB) \/ 4\.\d MiB {2}\d+\/23 tensors/);
      await until(`hf://acme/tiny-llama@main: pulled commit ${commit.slice(0, 12)}`);
    } finally {
      hub.setKnobs({ bandwidth: 0 });
    }
    await until("Local store (1)");
    expect(screen()).toMatch(new RegExp(`│ hf://acme/tiny-llama +main,${commit.slice(0, 12)} +4\\.\\d MiB +- +│`));

    const ls = await cake(["ls", "--json"], env);
    expect((JSON.parse(ls.stdout) as { ref: string; commit: string }[]).find((m) => m.ref === "hf://acme/tiny-llama@main")?.commit).toBe(commit);

    keys("q");
    await until("cake exited 0");
  });
});
