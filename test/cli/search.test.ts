/**
 * `cake search`: Hub search (searchModels against the Hub emulation: fields, Link pages, limit,
 * private and gated repos) and registry search (RegistryClient.catalog against real CNCF
 * distribution: pages, a registry that refuses the catalog, a server that has none), each also
 * through the built CLI as a user runs it.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isCakeError } from "../../src/errors.js";
import { clientFor } from "../../src/model/registry-pull.js";
import { searchModels, type HubModelHit } from "../../src/hub/index.js";
import { makeLlamaLike } from "../fixtures/models.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { startRegistry, type RunningRegistry, type TokenServer } from "../registry/harness.js";
import { cake } from "../helpers/cli.js";

let hub: Hub;
let tmp: string;
let model: string;
const OWNER = "hf_acme_token";

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-search-"));
  model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 64, layers: 1, vocab: 256, shards: 1 });
  hub = await startHub({ tokens: { [OWNER]: { user: "acme" } } });
  for (const id of ["acme/tiny-llama", "other/llama-clone", "acme/bert-mini"]) {
    hub.addRepo(id);
    await hub.commit(id, model);
  }
  hub.addRepo("acme/secret-llama", { private: true });
  hub.addRepo("acme/gated-llama", { gated: true });
});
afterAll(async () => {
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

const params = (token?: string) => ({ hubUrl: hub.url, ...(token ? { accessToken: token } : {}) });
const all = async (it: AsyncGenerator<HubModelHit>) => {
  const out: HubModelHit[] = [];
  for await (const m of it) out.push(m);
  return out;
};
const env = (extra: Record<string, string> = {}) => ({ HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, "hf"), CAKE_HOME: path.join(tmp, "store"), DOCKER_CONFIG: path.join(tmp, "docker"), ...extra });

describe("Hub search", () => {
  it("yields each model's id, downloads, likes, last change and flags", async () => {
    const hits = await all(searchModels(params(), { search: "llama" }));
    expect(hits.map((h) => h.id)).toEqual(["acme/gated-llama", "acme/tiny-llama", "other/llama-clone"]);
    const tiny = hits.find((h) => h.id === "acme/tiny-llama")!;
    expect(tiny).toMatchObject({ downloads: 0, likes: 0, private: false, gated: false });
    expect(tiny.lastModified).toMatch(/^\d{4}-\d{2}-\d{2}T/);
    expect(hits.find((h) => h.id === "acme/gated-llama")!.gated).toBe("manual");
  });

  it("shows a private model to its owner only", async () => {
    expect((await all(searchModels(params(), { search: "secret" }))).map((h) => h.id)).toEqual([]);
    const mine = await all(searchModels(params(OWNER), { search: "secret" }));
    expect(mine.map((h) => [h.id, h.private])).toEqual([["acme/secret-llama", true]]);
  });

  it("follows the Hub's next-page links past 1000 models and stops at the limit", async () => {
    const big = await startHub();
    try {
      for (let i = 0; i < 1003; i++) big.addRepo(`bulk/m-${String(i).padStart(4, "0")}`);
      const hits = await all(searchModels({ hubUrl: big.url }, { search: "bulk/", limit: 2000 }));
      expect(hits).toHaveLength(1003);
      expect(new Set(hits.map((h) => h.id)).size).toBe(1003);
      expect(hits.at(-1)!.id).toBe("bulk/m-1002");
      expect(await all(searchModels({ hubUrl: big.url }, { search: "bulk/", limit: 7 }))).toHaveLength(7);
    } finally {
      await big.close();
    }
    expect((await all(searchModels(params(), { author: "other" }))).map((h) => h.id)).toEqual(["other/llama-clone"]);
  });

  it("cake search prints a table, JSON, or says nothing matched", async () => {
    const r = await cake(["search", "llama"], env());
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^ID +DOWNLOADS +LIKES +UPDATED +TASK$/);
    expect(lines.slice(1).map((l) => l.split(/\s{2,}/)[0])).toEqual(["acme/gated-llama (gated)", "acme/tiny-llama", "other/llama-clone"]);
    expect(lines[2]).toMatch(/^acme\/tiny-llama +0 +0 +\d{4}-\d{2}-\d{2} +-$/);

    const json = await cake(["search", "llama", "--limit", "2", "--json"], env());
    expect((JSON.parse(json.stdout) as HubModelHit[]).map((h) => h.id)).toEqual(["acme/gated-llama", "acme/tiny-llama"]);

    const owner = await cake(["search", "secret"], env({ HF_TOKEN: OWNER }));
    expect(owner.stdout).toMatch(/^acme\/secret-llama \(private\) /m);

    const none = await cake(["search", "no-such-model"], env());
    expect(none.code).toBe(0);
    expect(none.stdout).toBe("");
    expect(none.stderr).toBe(`no model on ${hub.url} matches "no-such-model"\n`);
  });
});

describe("registry search", () => {
  let reg: RunningRegistry;
  let tokenReg: RunningRegistry & { tokenServer?: TokenServer };
  const access = () => ({ dockerConfig: path.join(tmp, "docker") });

  beforeAll(async () => {
    [reg, tokenReg] = await Promise.all([startRegistry(), startRegistry({ token: true })]);
    for (const ref of ["acme/tiny-llama:v1", "acme/tiny-llama:main", "other/bert:v2"]) {
      const r = await cake(["push", "-q", model, `${reg.host}/${ref}`], env());
      expect(r.code, r.stderr).toBe(0);
    }
  });
  afterAll(async () => {
    await reg?.close();
    await tokenReg?.close();
  });

  it("lists the catalog page by page", async () => {
    const repos: string[] = [];
    for await (const r of clientFor(reg.host, access()).catalog({ pageSize: 1 })) repos.push(r);
    expect(repos).toEqual(["acme/tiny-llama", "other/bert"]);
  });

  it("a registry that refuses the catalog, or a server without one, is one clear error", async () => {
    const refused = await clientFor(tokenReg.host, { ...access(), username: "cake", password: "cake-secret" }).catalog().next().catch((e: unknown) => e);
    expect(isCakeError(refused, "E_AUTH")).toBe(true);
    expect((refused as Error).message).toMatch(new RegExp(`^${tokenReg.host}: the registry does not let you list its repositories \\(GET /v2/_catalog: HTTP 401`));
    const hubHost = new URL(hub.url).host;
    const none = await clientFor(hubHost, access()).catalog().next().catch((e: unknown) => e);
    expect(isCakeError(none, "E_NOT_FOUND")).toBe(true);
    expect((none as Error).message).toBe(
      `${hubHost}: the registry does not offer a list of its repositories (GET /v2/_catalog: HTTP 404); name a repository instead (${hubHost}/<repository>)`,
    );
  });

  it("cake search --registry lists matching repositories and their tags", async () => {
    const r = await cake(["search", "llama", "--registry", reg.host], env());
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(new RegExp(`^REPOSITORY +TAGS\\n${reg.host}/acme/tiny-llama +(main, v1|v1, main)\\n$`));

    const json = await cake(["search", "--registry", reg.host, "--json"], env());
    const hits = JSON.parse(json.stdout) as { ref: string; tags: string[] }[];
    expect(hits.map((h) => [h.ref, [...h.tags].sort()])).toEqual([
      [`${reg.host}/acme/tiny-llama`, ["main", "v1"]],
      [`${reg.host}/other/bert`, ["v2"]],
    ]);

    const repo = await cake(["search", "--registry", `${reg.host}/other/bert`], env());
    expect(repo.stdout).toMatch(new RegExp(`${reg.host}/other/bert +v2\\n$`));

    const refused = await cake(["search", "--registry", tokenReg.host], env());
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^cake: .*does not let you list its repositories/);
  });
});
