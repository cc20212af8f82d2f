/**
 * Real networks: every request survives a cut answer, and a rate limit is waited out, saying why.
 * Every request survives a cut answer: the Hub emulation, a registry's counting proxy and its token
 * server cut answers at any byte (the status line, the headers, a JSON body, a redirect, the 64 KiB
 * header read, tensor bytes), and the built CLI still ends byte-identical; when the cuts never stop,
 * one line names the URL, how far the answer got and how many tries were made.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { dirBytes, hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import type { CutPlan } from "../helpers/cut-answer.js";
import { startHub, type CutRequest, type Hub } from "../hub/emulator.js";
import { startCountingProxy, type CountingProxy } from "../registry/counting-proxy.js";
import { startRegistry, type RunningRegistry, type TokenServer } from "../registry/harness.js";

let tmp: string;
let model: string;
let hub: Hub;
let modelBytes: number;
const REPO = "acme/tiny-llama";
const SHARD = "model-00001-of-00002.safetensors";

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-cut-"));
  model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 256, layers: 2, vocab: 2048, shards: 2 });
  modelBytes = await dirBytes(model);
  hub = await startHub({ pageSize: 3 });
  await hub.commit(REPO, model);
});
afterAll(async () => {
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  hub.setKnobs({ cut: undefined });
  hub.counters.reset();
});

let n = 0;
const env = (extra: Record<string, string> = {}) => ({ CAKE_HOME: path.join(tmp, `store-${n++}`), HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, "hf"), ...extra });

/** Pulls and exports `REPO`; the export must equal the model byte for byte. */
async function pullAndCompare(e: Record<string, string>): Promise<void> {
  const pull = await cake(["pull", "-q", `hf://${REPO}`], e);
  expect(pull.stderr).toBe("");
  expect(pull.code).toBe(0);
  const out = path.join(tmp, `out-${n++}`);
  const exp = await cake(["export", "-q", `hf://${REPO}`, out], e);
  expect(exp.code).toBe(0);
  expect(await hashTree(out)).toEqual(await hashTree(model));
}

/** What the knob was asked and cut. */
function recordCuts(plan: (r: CutRequest) => CutPlan | undefined): CutRequest[] {
  const cut: CutRequest[] = [];
  hub.setKnobs({
    cut: (r) => {
      const p = plan(r);
      if (p) cut.push(r);
      return p;
    },
  });
  return cut;
}

/** What a request is, for the cuts: each kind of answer a pull gets. */
function kindOf(r: CutRequest): string {
  if (r.url.includes("/revision/")) return "model info";
  if (r.url.includes("/tree/")) return "tree";
  if (r.server === "hub" && r.method === "HEAD") return "resolve";
  if (r.server === "hub") return "small file";
  return r.range?.endsWith("-65535") ? "header read" : "tensor bytes";
}

describe("a Hub pull when answers are cut", () => {
  it("survives every 3rd answer of each kind cut half-way, from the first: JSON, redirects and the header read included", async () => {
    const seen = new Map<string, number>();
    const cut = recordCuts((r) => {
      const k = (seen.get(kindOf(r)) ?? 0) + 1;
      seen.set(kindOf(r), k);
      return k % 3 === 1 ? { fraction: 0.5 } : undefined;
    });
    await pullAndCompare(env());
    expect(hub.counters.cut).toBe(cut.length);
    expect([...new Set(cut.map(kindOf))].sort()).toEqual(["header read", "model info", "resolve", "small file", "tensor bytes", "tree"]);
    // The cut bytes are all that was served twice: the header reads continue from their last byte.
    expect(hub.counters.bytesServed).toBeLessThan(modelBytes * 1.5);
  });

  // CAKE_RECEIVE_WORKERS: the same on the main thread and with the bytes received on worker threads (a big machine's default).
  it.each(["0", "2"])("survives a cut at any byte of an answer: the status line, the headers, the body's first and last byte (receive workers: %s)", async (workers) => {
    for (const plan of [{ bytes: 0 }, { bytes: 7 }, { bytes: 90 }, { fraction: 0.6 }, { fraction: 0.999 }] as CutPlan[]) {
      hub.counters.reset();
      recordCuts((r) => (r.n % 3 === 0 ? plan : undefined));
      await pullAndCompare(env({ CAKE_RECEIVE_WORKERS: workers }));
      expect(hub.counters.cut, JSON.stringify(plan)).toBeGreaterThan(4);
    }
  });

  it("after the last try says which URL, how far its answer got and how many tries, in one line", async () => {
    hub.setKnobs({ cut: (r) => (r.url.includes("/revision/") ? { fraction: 0.9 } : undefined) });
    const r = await cake(["pull", `hf://${REPO}`], env({ CAKE_HTTP_RETRIES: "2" }));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(`^cake: hf://${REPO}@main: GET http://127\\.0\\.0\\.1:\\d+/api/models/${REPO}/revision/main: connection closed after [\\d.]+ (B|KiB) of [\\d.]+ (B|KiB) \\(3 tries\\)(; and hf://${REPO}@main is not in the store [^\\n]+)?\\n$`),
    );
    expect(hub.counters.requests).toBe(3);
  });

  it("continues a cut header read from its last byte, and names the file when it gives up", async () => {
    // The first shard's 64 KiB header read is cut half-way, and each try that continues it is cut in its status line.
    const header = (r: CutRequest) => (r.server === "cdn" && r.range?.endsWith("-65535") ? (r.range.startsWith("bytes=0-") ? { fraction: 0.5 } : { bytes: 10 }) : undefined);
    recordCuts(header);
    const r = await cake(["pull", `hf://${REPO}`], env({ CAKE_HTTP_RETRIES: "2" }));
    expect(r.code).toBe(1);
    // The try that got half-way earned a fresh budget of tries: 1 + 3.
    expect(r.stderr).toMatch(new RegExp(`^cake: hf://${REPO}@[0-9a-f]{12}/model-0000[12]-of-00002\\.safetensors: GET http://[^ ]+\\?…: connection closed after 3\\d\\.\\d KiB of 64\\.0 KiB \\(4 tries\\)\\n$`));
    const starts = hub.counters.rangesByFile.get(`${REPO}/${SHARD}`)!.map(([a]) => a);
    expect(starts[0]).toBe(0);
    expect(starts.slice(1, 4)).toEqual([starts[1], starts[1], starts[1]]);
    expect(starts[1]).toBeGreaterThan(30 << 10);

    // Cut once, a header read costs nothing but the bytes the cut lost: it continues where it stopped.
    hub.counters.reset();
    recordCuts((r) => (r.server === "cdn" && r.range?.startsWith("bytes=0-65535") ? { fraction: 0.5 } : undefined));
    await pullAndCompare(env());
    const served = hub.counters.rangesByFile.get(`${REPO}/${SHARD}`)!;
    expect(served.filter(([a]) => a === 0)).toHaveLength(1);
    expect(served[1]![0]).toBeGreaterThan(30 << 10);
    expect(served[1]![1]).toBe(65536);
  });
});

describe("a rate-limited pull", () => {
  it("waits for the Hub's RateLimit reset (no Retry-After), says why on stderr, and finishes", async () => {
    hub.setKnobs({ fail429Every: 10, rateLimitStyle: "ratelimit", retryAfterSeconds: 1 });
    const e = env();
    const r = await cake(["pull", `hf://${REPO}`], e);
    hub.setKnobs({ fail429Every: 0 });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^cake: (GET|HEAD) http:\/\/127\.0\.0\.[12]:\d+\/\S+: rate limit "(api|resolvers)" \(0 of \d+ requests left in a 300 s window\), resets in 1 s; waiting 2 s before asking again$/m);
    expect(hub.counters.injected429).toBeGreaterThan(0);
    const quiet = await cake(["pull", "-q", `hf://${REPO}`], env());
    expect(quiet.stderr).toBe("");
  });
});

describe("a transfer stream that keeps breaking", () => {
  it.each(["0", "2"])("continues each cut from its last byte, and when it gives up says how far it got and how many tries (receive workers: %s)", async (workers) => {
    // Every answer with tensor bytes is cut half-way: each try gets half of what is left.
    hub.setKnobs({ cut: (r) => (r.server === "cdn" && !r.range?.endsWith("-65535") ? { fraction: 0.5 } : undefined) });
    const r = await cake(["pull", `hf://${REPO}`], env({ CAKE_HTTP_RETRIES: "0", CAKE_RECEIVE_WORKERS: workers }));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cake: hf:\/\/acme\/tiny-llama\/model-0000[12]-of-00002\.safetensors bytes \d+-\d+[^:]*: connection closed after [\d.]+ (KiB|MiB) of [\d.]+ (KiB|MiB) \(\d+ tries\)\n$/);
    const tries = Number(/\((\d+) tries\)/.exec(r.stderr)![1]);
    expect(tries).toBeGreaterThan(3); // each try that got further earned another
  });
});

describe("a registry pull when answers are cut", () => {
  let reg: RunningRegistry & { tokenServer?: TokenServer };
  let proxy: CountingProxy;
  const DOCKER = () => path.join(tmp, "docker");
  beforeAll(async () => {
    reg = await startRegistry({ token: true, htpasswd: { user: "alice", password: "secret" } });
    proxy = await startCountingProxy(reg.url);
  });
  afterAll(async () => {
    await proxy?.close();
    await reg?.close();
  });

  it("survives cut manifests, configs, blobs and token answers, and ends byte-identical", async () => {
    const creds = ["-u", "alice", "-p", "secret"];
    const e = { CAKE_HOME: path.join(tmp, "reg-push"), DOCKER_CONFIG: DOCKER() };
    const push = await cake(["push", "-q", ...creds, model, `${proxy.host}/acme/tiny:v1`], e);
    expect(push.stderr).toBe("");
    expect(push.code).toBe(0);

    // Every 2nd answer of each kind is cut: at the headers for some, half-way through the body for others.
    const counts = new Map<string, number>();
    const plans: CutPlan[] = [{ bytes: 20 }, { fraction: 0.5 }, { fraction: 0.95 }];
    proxy.reset();
    proxy.fault({
      times: 1000,
      when: (req) => {
        const kind = `${req.method} ${req.url?.replace(/[0-9a-f]{64}/, "")}`;
        const k = (counts.get(kind) ?? 0) + 1;
        counts.set(kind, k);
        return k % 2 === 0;
      },
      cutAnswer: () => plans[proxy.requests.length % plans.length]!,
    });
    reg.tokenServer!.cut = (k) => (k % 2 === 0 ? { fraction: 0.5 } : undefined);
    const pulled = { CAKE_HOME: path.join(tmp, "reg-pull"), DOCKER_CONFIG: DOCKER() };
    const pull = await cake(["pull", "-q", ...creds, `${proxy.host}/acme/tiny:v1`], pulled);
    expect(pull.stderr).toBe("");
    expect(pull.code).toBe(0);
    // The same with the bytes received on worker threads.
    const viaWorkers = await cake(["pull", "-q", ...creds, `${proxy.host}/acme/tiny:v1`], { ...pulled, CAKE_HOME: path.join(tmp, "reg-pull-workers"), CAKE_RECEIVE_WORKERS: "2" });
    expect(viaWorkers.stderr).toBe("");
    expect(viaWorkers.code).toBe(0);
    reg.tokenServer!.cut = undefined;
    expect(proxy.requests.filter((r) => r.faulted).map((r) => r.kind)).toEqual(expect.arrayContaining(["manifest", "blob"]));
    const out = path.join(tmp, "reg-out");
    expect((await cake(["export", "-q", `${proxy.host}/acme/tiny:v1`, out], pulled)).code).toBe(0);
    expect(await hashTree(out)).toEqual(await hashTree(model));
  });
});
