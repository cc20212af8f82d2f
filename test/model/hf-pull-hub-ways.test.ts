/**
 * `cake pull hf://…` then `cake export`, byte-identical, through the ways huggingface.co serves files
 * today besides the plain LFS CDN: the Xet bridge, signed links that expire mid-pull (403 and 400), and
 * the relative 307 to /api/resolve-cache. Each is a knob of the Hub emulation (docs/hub-emulation.md).
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";

let hub: Hub;
let tmp: string;
let base: string;
const TOKEN = "hf_testtoken_alice";

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-pull-ways-"));
  base = path.join(tmp, "model");
  await makeLlamaLike(base, { hidden: 256, layers: 2, vocab: 1024, shards: 2 });
  hub = await startHub({ tokens: { [TOKEN]: { user: "alice" } } });
  hub.addRepo("alice/tiny-llama", { private: true }); // resolve-cache must keep the token
  await hub.commit("alice/tiny-llama", base);
});
afterAll(async () => {
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  hub.setKnobs({ bandwidth: 0, xet: false, xetRangeRequiredAbove: undefined, linkTtlSeconds: undefined, expiredLinkStatus: undefined, resolveCache: false });
  hub.counters.reset();
});

let n = 0;
/** Pulls with a fresh store and the token, exports, and checks the files against the model's. */
async function pullAndExport(...opts: string[]): Promise<void> {
  const env = { CAKE_HOME: path.join(tmp, `store-${n++}`), HF_ENDPOINT: hub.url, HF_TOKEN: TOKEN, HF_HOME: path.join(tmp, `hf-${n}`) };
  const pull = await cake(["pull", "-q", ...opts, "hf://alice/tiny-llama"], env);
  expect(pull.stderr).toBe("");
  expect(pull.code).toBe(0);
  const out = path.join(tmp, `out-${n}`);
  const exp = await cake(["export", "-q", "hf://alice/tiny-llama", out], env);
  expect(exp.code).toBe(0);
  expect(await hashTree(out)).toEqual(await hashTree(base));
  expect(hub.counters.cdnAuthorizationSeen).toBe(0);
}

describe("cake pull hf:// through what the Hub does", () => {
  it("pulls Xet-backed files from the Xet bridge, which refuses any GET without Range", async () => {
    hub.setKnobs({ xet: true, xetRangeRequiredAbove: 0 });
    await pullAndExport();
    expect(hub.counters.xetRequests).toBeGreaterThan(3); // headers and tensors of 3 shards
  });

  for (const status of [403, 400] as const) {
    it(`re-resolves signed links that expire mid-pull (answered ${status}) and finishes byte-identical`, async () => {
      // Links live 1-2 s. Two connections at 500 kB/s each take several seconds for the model's 4 MB, in
      // pieces of 256 KiB: the later pieces start on links that have died.
      hub.setKnobs({ linkTtlSeconds: 1, expiredLinkStatus: status, bandwidth: 500_000 });
      await pullAndExport("--concurrency", "2", "--chunk-size", String(256 << 10));
      expect(hub.counters.expiredLinks).toBeGreaterThan(0);
    });
  }

  it("follows the relative 307 to /api/resolve-cache for regular files, with the token", async () => {
    hub.setKnobs({ resolveCache: "always" });
    await pullAndExport();
    expect(hub.counters.resolveCacheRedirects).toBeGreaterThan(0);
  });
});
