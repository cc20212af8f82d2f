/**
 * Hub tokens end to end, the built CLI against the Hub emulation: a token with a newline, a browser
 * login's token refreshed as huggingface_hub refreshes it, a token the Hub refuses (public repos
 * go on anonymously with one warning, gated ones fail saying so), `export --hf-cache` into the hub
 * cache huggingface_hub reads, and a redirect between the Hub's two names keeping the token.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HubFileReader, modelInfo } from "../../src/hub/index.js";
import { makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { startHub, type Hub } from "./emulator.js";

let hub: Hub;
let tmp: string;
let n = 0;
const TOKEN = "hf_tokentest_alice";
const freshEnv = (extra: Record<string, string> = {}) => ({
  CAKE_HOME: path.join(tmp, `store-${++n}`),
  HF_HOME: path.join(tmp, `hf-${n}`),
  HF_ENDPOINT: hub.url,
  HF_TOKEN: "",
  HUGGING_FACE_HUB_TOKEN: "",
  HF_TOKEN_PATH: "",
  HF_HUB_CACHE: "",
  HUGGINGFACE_HUB_CACHE: "",
  HF_HUB_OFFLINE: "",
  TRANSFORMERS_OFFLINE: "",
  HF_HUB_DISABLE_IMPLICIT_TOKEN: "",
  ...extra,
});

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-token-"));
  const model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 64, layers: 1, vocab: 256, shards: 1 });
  hub = await startHub({
    tokens: { [TOKEN]: { user: "alice" } },
    refreshTokens: { hf_refresh_alice: { user: "alice" } },
    aliasHost: "127.0.0.3",
  });
  for (const [id, o] of [["acme/public", {}], ["alice/private", { private: true }], ["acme/gated", { gated: true }]] as const) {
    hub.addRepo(id, o);
    await hub.commit(id, model);
  }
});
afterAll(async () => {
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

describe("Hub tokens", () => {
  it("sends HF_TOKEN without the newline it was set with", async () => {
    const r = await cake(["pull", "-q", "hf://alice/private"], freshEnv({ HF_TOKEN: `${TOKEN}\n` }));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  it("refreshes a browser login's token close to expiry with its refresh token, saved where huggingface_hub saves it", async () => {
    const env = freshEnv();
    const soon = Math.floor(Date.now() / 1000) + 3600;
    await fs.mkdir(env.HF_HOME, { recursive: true });
    await fs.writeFile(path.join(env.HF_HOME, "token"), "hf_oauth_old");
    await fs.writeFile(path.join(env.HF_HOME, "stored_tokens"), `[oauth-alice]\nhf_token = hf_oauth_old\nrefresh_token = hf_refresh_alice\nexpires_at = ${soon}\n\n[other]\nhf_token = hf_x\n\n`);
    const r = await cake(["pull", "-q", "hf://alice/private"], env);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const stored = await fs.readFile(path.join(env.HF_HOME, "stored_tokens"), "utf8");
    const expires = Number(/expires_at = (\d+)/.exec(stored)?.[1]);
    expect(stored).toBe(`[oauth-alice]\nhf_token = hf_oauth_emulator_1\nrefresh_token = hf_refresh_alice\nexpires_at = ${expires}\n\n[other]\nhf_token = hf_x\n\n`);
    expect(expires - Date.now() / 1000).toBeGreaterThan(29 * 24 * 3600);
    expect(await fs.readFile(path.join(env.HF_HOME, "token"), "utf8")).toBe("hf_oauth_emulator_1");
  });

  it("pulls a public repo anonymously, with one warning, when the Hub refuses the token", async () => {
    const env = freshEnv();
    await fs.mkdir(env.HF_HOME, { recursive: true });
    await fs.writeFile(path.join(env.HF_HOME, "token"), "hf_expired\n");
    const r = await cake(["pull", "-q", "hf://acme/public"], env);
    expect(r.stderr).toBe(`cake: warning: the Hub refused the token from the token file ${path.join(env.HF_HOME, "token")} (expired or revoked); run \`hf auth login\`; going on anonymously\n`);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^sha256:[a-f0-9]{64}\n$/);
  });

  it("says why a browser login's token could not be refreshed when the Hub then refuses it", async () => {
    const env = freshEnv();
    const tokenFile = path.join(env.HF_HOME, "token");
    await fs.mkdir(env.HF_HOME, { recursive: true });
    await fs.writeFile(tokenFile, "hf_oauth_expired");
    await fs.writeFile(path.join(env.HF_HOME, "stored_tokens"), `[oauth-alice]\nhf_token = hf_oauth_expired\nrefresh_token = hf_refresh_revoked\nexpires_at = 1700000000\n\n`);
    const r = await cake(["pull", "-q", "hf://acme/public"], env);
    expect(r.stderr).toBe(
      `cake: warning: the Hub refused the token from the token file ${tokenFile} (refreshing it failed: invalid_grant - The refresh token is invalid or expired); run \`hf auth login\`; going on anonymously\n`,
    );
    expect(r.code).toBe(0);
  });

  it("fails on a gated repo saying the Hub refused the token", async () => {
    const r = await cake(["pull", "-q", "hf://acme/gated"], freshEnv({ HF_TOKEN: "hf_expired" }));
    // Model info is public, so the pull goes on anonymously (the warning) until the gated file (the error).
    const [warning, error, ...rest] = r.stderr.split("\n");
    expect(warning).toBe("cake: warning: the Hub refused the token from HF_TOKEN (expired or revoked); set a valid HF_TOKEN; going on anonymously");
    expect(rest).toEqual([""]);
    expect(error).toMatch(/^cake: hf:\/\/acme\/gated@[0-9a-f]{12}\/[^:]+: gated repository; the Hub refused the token from HF_TOKEN \(expired or revoked\); set a valid HF_TOKEN$/);
    expect(r.code).toBe(1);
  });

  it("exports --hf-cache into HF_HUB_CACHE (else HUGGINGFACE_HUB_CACHE), as huggingface_hub reads its cache", async () => {
    const env = freshEnv();
    expect((await cake(["pull", "-q", "hf://acme/public"], env)).code).toBe(0);
    for (const [name, dir] of [["HF_HUB_CACHE", "new-cache"], ["HUGGINGFACE_HUB_CACHE", "legacy-cache"]]) {
      const r = await cake(["export", "-q", "--hf-cache", "hf://acme/public"], { ...env, [name!]: path.join(tmp, dir!) });
      expect(r.code).toBe(0);
      expect(r.stdout.startsWith(path.join(tmp, dir!, "models--acme--public", "snapshots"))).toBe(true);
    }
  });

  it("keeps the token across a redirect between the Hub's two names, and still gives none to the CDN", async () => {
    hub.setKnobs({ redirectToAlias: true });
    try {
      const params = { hubUrl: hub.url, accessToken: TOKEN, hubAliases: [hub.aliasUrl!] };
      const info = await modelInfo(params, "alice/private", "main");
      const reader = new HubFileReader(params, "alice/private", info.sha, "config.json");
      expect((await reader.read(0, 1)).toString()).toBe("{");
      expect(hub.counters.cdnAuthorizationSeen).toBe(0);
    } finally {
      hub.setKnobs({ redirectToAlias: false });
    }
  });
});
