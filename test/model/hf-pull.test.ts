/**
 * `cake pull hf://…` and `cake export` end to end: the built CLI against the Hub emulation over
 * loopback, checked by what a user sees (files, bytes, exit codes, messages) and by the emulation's
 * own counters (which bytes crossed the wire).
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startHub, type Hub } from "../hub/emulator.js";
import { hashTree, makeFineTune, makeLlamaLike, dirBytes, writeSafetensorsFile } from "../fixtures/models.js";
import { cake, spawnCake, waitFor } from "../helpers/cli.js";

let hub: Hub;
let tmp: string;
let base: string;
let baseCommit: string;
const TOKEN = "hf_testtoken_alice";

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-pull-"));
  base = path.join(tmp, "tiny-llama");
  await makeLlamaLike(base, { hidden: 512, layers: 3, vocab: 4096, shards: 3 });
  hub = await startHub({ tokens: { [TOKEN]: { user: "alice", gatedAccess: ["acme/gated-llama"] } }, pageSize: 3 });
  hub.addRepo("acme/tiny-llama");
  baseCommit = await hub.commit("acme/tiny-llama", base, { tags: ["v1.0"] });
  hub.addRepo("acme/gated-llama", { gated: true });
  await hub.commit("acme/gated-llama", base);
});
afterAll(async () => {
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  hub.setKnobs({ bandwidth: 0, latencyMs: 0, dropAfterBytes: 0, dropEvery: 0, fail429Every: 0, fail503Every: 0, siblings: undefined });
  hub.counters.reset();
});

let n = 0;
const freshEnv = (extra: Record<string, string> = {}) => ({ CAKE_HOME: path.join(tmp, `store-${n++}`), HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, `hf-${n}`), ...extra });

describe("cake pull hf:// + export", () => {
  it("pulls a sharded model with tokenizer files and exports it byte-identical", async () => {
    const env = freshEnv({ HF_TOKEN: TOKEN });
    const pull = await cake(["pull", "hf://acme/tiny-llama"], env);
    expect(pull.stderr).toContain(`pulled commit ${baseCommit}`);
    expect(pull.code).toBe(0);
    expect(pull.stdout).toMatch(/^sha256:[a-f0-9]{64}\n$/);

    // Each header (with its length) came in one Range request of 64 KiB, never the whole file; the
    // tensor bytes that came along are all that was served twice.
    let overRead = 0;
    for (const shard of ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]) {
      const ranges = hub.counters.rangesByFile.get(`acme/tiny-llama/${shard}`)!;
      const bytes = await fs.readFile(path.join(base, shard));
      const headerEnd = 8 + Number(bytes.readBigUInt64LE(0));
      expect(bytes.length).toBeGreaterThan(64 << 10);
      expect(ranges[0]).toEqual([0, 64 << 10]);
      overRead += (64 << 10) - headerEnd;
      // The shard's data came in Range requests that cover it exactly once...
      const data = ranges.slice(1);
      expect(data.reduce((n, [a, b]) => n + (b - a), 0)).toBe(bytes.length - headerEnd);
      // ...and, for the two shards of many tensors, few of them, not one per tensor.
      if (shard !== "model-00003-of-00003.safetensors") {
        const tensors = Object.keys(JSON.parse(bytes.subarray(8, headerEnd).toString()) as object).filter((k) => k !== "__metadata__").length;
        expect(data.length).toBeLessThan(tensors / 2);
      }
    }
    // The token went to the Hub, never to the CDN.
    expect(hub.counters.cdnAuthorizationSeen).toBe(0);
    expect(hub.counters.bytesServed).toBe((await dirBytes(base)) + overRead);

    // The pull matched every file against the Hub's hashes, so export copies without hashing again.
    const out = path.join(tmp, "out-1");
    const exp = await cake(["export", "hf://acme/tiny-llama", out], env);
    expect(exp.code).toBe(0);
    expect(exp.stderr).toContain("(each matched its sha256 when the store checked it)");
    expect(await hashTree(out)).toEqual(await hashTree(base));
    for (const f of await fs.readdir(out)) expect((await fs.stat(path.join(out, f))).mode & 0o777).toBe(0o644);

    const ls = await cake(["ls", "--json"], env);
    const models = JSON.parse(ls.stdout) as { ref: string; commit: string; files: number; tensors: number; bytes: number }[];
    const main = models.find((m) => m.ref === "hf://acme/tiny-llama@main")!;
    expect(main.commit).toBe(baseCommit);
    expect(main.files).toBe((await fs.readdir(base)).length);
    expect(main.bytes).toBe(await dirBytes(base));
    expect(main.tensors).toBeGreaterThan(20);

    const inspect = await cake(["inspect", "hf://acme/tiny-llama"], env);
    expect(inspect.code).toBe(0);
    expect(inspect.stdout).toContain("model.layers.0.self_attn.q_proj.weight");
    expect(inspect.stdout).toContain(`source    hf://acme/tiny-llama@${baseCommit}`);

    // A second pull is a no-op.
    hub.counters.reset();
    const again = await cake(["pull", "hf://acme/tiny-llama"], env);
    expect(again.stderr).toContain("up to date");
    expect(hub.counters.bytesServed).toBe(0);
  });

  it("export --verify hashes again and catches a store blob changed on disk, leaving nothing behind", async () => {
    const env = freshEnv();
    expect((await cake(["pull", "-q", "hf://acme/tiny-llama"], env)).code).toBe(0);
    const good = path.join(tmp, `verify-good-${n}`);
    const r1 = await cake(["export", "--verify", "hf://acme/tiny-llama", good], env);
    expect(r1.code).toBe(0);
    expect(r1.stderr).toContain("each hashed and matched against its sha256");
    expect(await hashTree(good)).toEqual(await hashTree(base));

    // Flip one byte of the largest blob (a tensor of a shard), as a failing disk or a careless hand would.
    const blobs = path.join(env.CAKE_HOME, "blobs", "sha256");
    const sizes = await Promise.all((await fs.readdir(blobs)).map(async (h) => ({ h, size: (await fs.stat(path.join(blobs, h))).size })));
    const victim = path.join(blobs, sizes.sort((a, b) => b.size - a.size)[0]!.h);
    await fs.chmod(victim, 0o644);
    const bytes = await fs.readFile(victim);
    bytes[1000] = bytes[1000]! ^ 1;
    await fs.writeFile(victim, bytes);

    const out = path.join(tmp, `verify-bad-${n}`);
    const r2 = await cake(["export", "--verify", "-q", "hf://acme/tiny-llama", out], env);
    expect(r2.code).not.toBe(0);
    expect(r2.stderr).toMatch(/^cake: model-0000\d-of-00003\.safetensors: rebuilt file hashes to sha256 [a-f0-9]{64}, expected [a-f0-9]{64}\n$/);
    // nothing of the failed export is left: no folder, no temp folder beside it
    expect(await fs.readdir(tmp)).not.toContain(path.basename(out));
    expect((await fs.readdir(tmp)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("reads the headers whether or not the model info names the files, and pulls only what the tree lists", async () => {
    // Model info's file names let header reads start before the tree answers; the tree decides.
    const answers: [string, (names: string[]) => string[]][] = [
      ["no siblings", () => []],
      ["a sibling the commit lacks", (names) => [...names, "ghost-00001-of-00001.safetensors"]],
    ];
    for (const [what, siblings] of answers) {
      hub.setKnobs({ siblings });
      hub.counters.reset();
      const env = freshEnv();
      const pull = await cake(["pull", "-q", "hf://acme/tiny-llama"], env);
      expect(pull.stderr, what).toBe("");
      expect(pull.code, what).toBe(0);
      for (const shard of ["model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors"]) {
        const ranges = hub.counters.rangesByFile.get(`acme/tiny-llama/${shard}`)!;
        expect(ranges[0], what).toEqual([0, 64 << 10]);
      }
      const out = path.join(tmp, `out-siblings-${n}`);
      expect((await cake(["export", "-q", "hf://acme/tiny-llama", out], env)).code, what).toBe(0);
      expect(await hashTree(out), what).toEqual(await hashTree(base));
    }
  });

  it("reads a header longer than the first 64 KiB request with a second one for the rest", async () => {
    const dir = path.join(tmp, "long-header");
    // 3000 small tensors with long names: a header of ~300 KB.
    const tensors = Array.from({ length: 3000 }, (_, i) => ({ name: `model.layers.${i}.mlp.experts.${i % 64}.a_rather_long_projection_name.weight`, dtype: "F32", shape: [4] }));
    await writeSafetensorsFile(path.join(dir, "model.safetensors"), tensors);
    hub.addRepo("acme/long-header");
    await hub.commit("acme/long-header", dir);
    hub.counters.reset();
    const env = freshEnv();
    const pull = await cake(["pull", "-q", "hf://acme/long-header"], env);
    expect(pull.stderr).toBe("");
    expect(pull.code).toBe(0);
    const bytes = await fs.readFile(path.join(dir, "model.safetensors"));
    const headerEnd = 8 + Number(bytes.readBigUInt64LE(0));
    expect(headerEnd).toBeGreaterThan(64 << 10);
    const ranges = hub.counters.rangesByFile.get("acme/long-header/model.safetensors")!;
    expect(ranges.slice(0, 2)).toEqual([
      [0, 64 << 10],
      [64 << 10, headerEnd],
    ]);
    const out = path.join(tmp, "out-long-header");
    expect((await cake(["export", "-q", "hf://acme/long-header", out], env)).code).toBe(0);
    expect(await hashTree(out)).toEqual(await hashTree(dir));
  });

  it("pulls by tag and by commit sha to the same manifest", async () => {
    const env = freshEnv();
    const byTag = await cake(["pull", "-q", "hf://acme/tiny-llama@v1.0"], env);
    const bySha = await cake(["pull", "-q", `hf://acme/tiny-llama@${baseCommit}`], env);
    expect(byTag.code).toBe(0);
    expect(byTag.stdout).toBe(bySha.stdout);
    expect(byTag.stderr).toBe("");
  });

  it("turns Hub errors into one-line messages and a non-zero exit", async () => {
    const env = freshEnv();
    const cases: [string, RegExp][] = [
      ["hf://acme/nope", /^cake: hf:\/\/acme\/nope@main: repository not found/],
      ["hf://acme/tiny-llama@no-such-branch", /^cake: hf:\/\/acme\/tiny-llama@no-such-branch: revision not found/],
      ["hf://acme/gated-llama", /^cake: hf:\/\/acme\/gated-llama@[0-9a-f]{12}\/[^:]+: gated repository: log in with HF_TOKEN/],
      ["hf://acme/a/b/c", /^cake: hf:\/\/acme\/a\/b\/c: bad repository name/],
    ];
    for (const [ref, msg] of cases) {
      const r = await cake(["pull", ref], env);
      expect(r.code, ref).not.toBe(0);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    }
    const gated = await cake(["pull", "-q", "hf://acme/gated-llama"], { ...env, HF_TOKEN: TOKEN });
    expect(gated.code).toBe(0);
    const other = await cake(["pull", "-q", "hf://acme/gated-llama"], { ...freshEnv(), HF_TOKEN: "hf_unknown" });
    expect(other.code).toBe(1);
  });

  it("uses the store's copy, with a warning, when HF_HUB_OFFLINE is set or the Hub cannot be reached; one line when the store lacks it", async () => {
    const env = freshEnv();
    const first = await cake(["pull", "-q", "hf://acme/tiny-llama"], env);
    expect(first.code).toBe(0);
    const using = (why: string) => `cake: warning: hf://acme/tiny-llama@main: ${why}; using hf://acme/tiny-llama@main as the store has it (commit ${baseCommit})\n`;

    hub.counters.reset();
    const offline = await cake(["pull", "-q", "hf://acme/tiny-llama"], { ...env, HF_HUB_OFFLINE: "1" });
    expect(offline.stderr).toBe(using("HF_HUB_OFFLINE is set, the Hub is not asked"));
    expect(offline.code).toBe(0);
    expect(offline.stdout).toBe(first.stdout);
    expect(hub.counters.requests).toBe(0);

    // Nothing listens at port 9: the pull falls back at once (no retries asked for), and so does a push.
    const down = { ...env, HF_ENDPOINT: "http://127.0.0.1:9", CAKE_HTTP_RETRIES: "0" };
    const refused = "cannot reach the Hub at http://127.0.0.1:9: connect ECONNREFUSED 127.0.0.1:9";
    const unreachable = await cake(["pull", "-q", "hf://acme/tiny-llama"], down);
    expect(unreachable.stderr).toBe(using(refused));
    expect(unreachable.code).toBe(0);
    expect(unreachable.stdout).toBe(first.stdout);
    const push = await cake(["push", "-q", "hf://acme/tiny-llama", "127.0.0.1:9/acme/tiny-llama:v1"], down);
    const [warned, failed, ...rest] = push.stderr.split("\n");
    expect(`${warned}\n`).toBe(using(refused));
    expect(failed).toMatch(/^cake: 127\.0\.0\.1:9\/acme\/tiny-llama@sha256:[a-f0-9]{64}: HEAD /); // on to the registry, with the store's blobs
    expect(rest).toEqual([""]);
    expect(push.code).toBe(1);

    for (const [extra, why] of [
      [{ HF_HUB_OFFLINE: "true" }, "HF_HUB_OFFLINE is set, the Hub is not asked"],
      [down, refused],
    ] as const) {
      const missing = await cake(["pull", "-q", "hf://acme/other"], { ...env, ...extra });
      expect(missing.stderr).toBe(`cake: hf://acme/other@main: ${why}; and hf://acme/other@main is not in the store ${env.CAKE_HOME}\n`);
      expect(missing.code).toBe(1);
    }
  });

  it("refuses a hostile safetensors header on the Hub, naming the file and the tensor, and stores nothing", async () => {
    const dir = path.join(tmp, "hostile");
    await fs.mkdir(dir, { recursive: true });
    const json = Buffer.from('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    await fs.writeFile(path.join(dir, "model.safetensors"), Buffer.concat([len, json, Buffer.alloc(12)]));
    await fs.writeFile(path.join(dir, "config.json"), "{}");
    hub.addRepo("evil/overlap");
    await hub.commit("evil/overlap", dir);
    const env = freshEnv();
    const r = await cake(["pull", "hf://evil/overlap"], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('cake: model.safetensors: invalid safetensors: tensor "b" at [4, 12] overlaps the tensor before it\n');
    const blobs = await fs.readdir(path.join(env.CAKE_HOME, "blobs", "sha256")).catch(() => []);
    expect(blobs).toEqual([]);
    expect(JSON.parse((await cake(["ls", "--json"], env)).stdout)).toEqual([]);
  });

  it("survives dropped connections and 429s and still ends byte-identical", async () => {
    const env = freshEnv();
    hub.setKnobs({ dropAfterBytes: 300_000, dropEvery: 3, fail429Every: 7, retryAfterSeconds: 0 });
    const pull = await cake(["pull", "-q", "--chunk-size", String(1 << 20), "hf://acme/tiny-llama"], env);
    expect(pull.stderr).toBe("");
    expect(pull.code).toBe(0);
    expect(hub.counters.dropped).toBeGreaterThan(0);
    expect(hub.counters.injected429).toBeGreaterThan(0);
    const out = path.join(tmp, "out-drops");
    expect((await cake(["export", "-q", "hf://acme/tiny-llama", out], env)).code).toBe(0);
    expect(await hashTree(out)).toEqual(await hashTree(base));
  });

  it("resumes a killed pull without re-fetching finished tensors", async () => {
    const env = freshEnv();
    const total = await dirBytes(base);
    // Slow enough to kill half-way: 4 streams at 1.5 MB/s each.
    hub.setKnobs({ bandwidth: 1_500_000 });
    const child = spawnCake(["pull", "-q", "-c", "4", "--chunk-size", String(1 << 20), "hf://acme/tiny-llama"], env);
    await waitFor(() => hub.counters.bytesServed > total * 0.4, 60_000, "half the model");
    child.kill("SIGKILL");
    await new Promise((r) => child.on("close", r));
    const firstRun = new Map([...hub.counters.rangesByFile].map(([k, v]) => [k, [...v]]));
    const firstBytes = hub.counters.bytesServed;
    expect(firstBytes).toBeLessThan(total);

    // Which units the first run finished, by the store's own record (files named by content sha256).
    const pathBySha = new Map([...(await hashTree(base))].map(([p, sha]) => [sha, p]));
    const rangesDir = path.join(env.CAKE_HOME, "cake", "ranges");
    const finished: { file: string; a: number; b: number }[] = [];
    for (const sha of await fs.readdir(rangesDir)) {
      for (const line of (await fs.readFile(path.join(rangesDir, sha), "utf8")).split("\n").filter(Boolean)) {
        const [a, b] = line.split(" ").map(Number);
        finished.push({ file: pathBySha.get(sha) ?? sha, a: a!, b: b! });
      }
    }
    expect(finished.filter((u) => u.file.endsWith(".safetensors")).length).toBeGreaterThan(0);

    hub.setKnobs({ bandwidth: 0 });
    hub.counters.reset();
    const resumed = await cake(["pull", "-q", "hf://acme/tiny-llama"], env);
    expect(resumed.code).toBe(0);
    // Nothing fetched twice beyond what was in flight at the kill (at most 1 MiB per stream + headers).
    expect(firstBytes + hub.counters.bytesServed).toBeLessThan(total + 4 * (1 << 20) + 200_000);
    // The headers of files with finished tensors were read as 8 bytes and then N: a 64 KiB read would
    // take those tensors' bytes along.
    const started = new Set(finished.map((u) => u.file).filter((f) => f.endsWith(".safetensors")));
    for (const shard of started) expect(hub.counters.rangesByFile.get(`acme/tiny-llama/${shard}`)![0], shard).toEqual([0, 8]);
    // No finished unit was requested again.
    for (const u of finished) {
      const again = (hub.counters.rangesByFile.get(`acme/tiny-llama/${u.file}`) ?? []).filter(([x, y]) => x < u.b && y > u.a);
      expect(again, `${u.file} ${u.a}-${u.b}`).toEqual([]);
    }
    expect(firstRun.size).toBeGreaterThan(0);
    const out = path.join(tmp, "out-resume");
    expect((await cake(["export", "-q", "hf://acme/tiny-llama", out], env)).code).toBe(0);
    expect(await hashTree(out)).toEqual(await hashTree(base));
  });

  it("on a full disk: a one-line error naming what it was writing, nothing wrong visible, and the pull resumes once there is room", async () => {
    // A 6 MiB tmpfs as the store (root only, as in CI): the model is bigger than that.
    const small = path.join(tmp, "small-disk");
    await fs.mkdir(small, { recursive: true });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=6m", "tmpfs", small]);
    try {
      const env = freshEnv({ CAKE_HOME: path.join(small, "store") });
      const r = await cake(["pull", "-q", "hf://acme/tiny-llama"], env);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^cake: hf:\/\/acme\/tiny-llama\/\S+( bytes \d+-\d+)?: no space left on device\n$/);
      const blobs = path.join(env.CAKE_HOME, "blobs", "sha256");
      for (const hex of await fs.readdir(blobs)) {
        const bytes = await fs.readFile(path.join(blobs, hex));
        expect(createHash("sha256").update(bytes).digest("hex")).toBe(hex);
      }
      expect(JSON.parse((await cake(["ls", "--json"], env)).stdout)).toEqual([]);
      // Grow the disk: the same command finishes the job.
      execFileSync("mount", ["-o", "remount,size=64m", small]);
      const again = await cake(["pull", "-q", "hf://acme/tiny-llama"], env);
      expect(again.stderr).toBe("");
      expect(again.code).toBe(0);
    } finally {
      execFileSync("umount", ["-l", small]);
    }
  });

  it("lets two concurrent pulls of the same model share one store", async () => {
    const env = freshEnv();
    const [a, b] = await Promise.all([cake(["pull", "-q", "hf://acme/tiny-llama"], env), cake(["pull", "-q", "hf://acme/tiny-llama"], env)]);
    expect(a.stderr + b.stderr).toBe("");
    expect([a.code, b.code]).toEqual([0, 0]);
    expect(a.stdout).toBe(b.stdout);
    const out = path.join(tmp, "out-concurrent");
    expect((await cake(["export", "-q", "hf://acme/tiny-llama", out], env)).code).toBe(0);
    expect(await hashTree(out)).toEqual(await hashTree(base));
    // No ingest leftovers.
    expect((await fs.readdir(path.join(env.CAKE_HOME, "ingest"))).filter((f) => !f.endsWith(".lock"))).toEqual([]);
  });

  it("rm + gc frees what only the removed model used and keeps shared blobs", async () => {
    const env = freshEnv();
    const ft = path.join(tmp, "tiny-llama-ft");
    await makeFineTune(base, ft, ["model.layers.2.mlp.down_proj.weight", "lm_head.weight"]);
    hub.addRepo("acme/tiny-llama-ft");
    await hub.commit("acme/tiny-llama-ft", ft);
    expect((await cake(["pull", "-q", "hf://acme/tiny-llama"], env)).code).toBe(0);
    expect((await cake(["pull", "-q", "hf://acme/tiny-llama-ft"], env)).code).toBe(0);
    const blobsDir = path.join(env.CAKE_HOME, "blobs", "sha256");
    const before = (await fs.readdir(blobsDir)).length;

    expect((await cake(["rm", "hf://acme/tiny-llama"], env)).code).toBe(0);
    const gc = await cake(["gc"], env);
    expect(gc.code).toBe(0);
    expect(gc.stderr).toMatch(/gc: removed \d+ blobs/);
    const after = (await fs.readdir(blobsDir)).length;
    expect(after).toBeLessThan(before);
    // Shared tensors stayed: the fine-tune still exports byte-identical, offline.
    const out = path.join(tmp, "out-ft");
    expect((await cake(["export", "-q", "hf://acme/tiny-llama-ft", out], { ...env, HF_ENDPOINT: "http://127.0.0.1:9" })).code).toBe(0);
    expect(await hashTree(out)).toEqual(await hashTree(ft));
    const ls = JSON.parse((await cake(["ls", "--json"], env)).stdout) as { ref: string }[];
    expect(ls.map((m) => m.ref).filter((r) => r.startsWith("hf://acme/tiny-llama@"))).toEqual([]);
  });

  it("exports into the HF cache layout that huggingface_hub loads with HF_HUB_OFFLINE=1", async () => {
    const env = freshEnv();
    expect((await cake(["pull", "-q", "hf://acme/tiny-llama"], env)).code).toBe(0);
    const exp = await cake(["export", "-q", "hf://acme/tiny-llama", "--hf-cache"], env);
    expect(exp.code).toBe(0);
    const snap = exp.stdout.trim();
    expect(snap).toBe(path.join(env.HF_HOME, "hub", "models--acme--tiny-llama", "snapshots", baseCommit));
    const py = spawnSync(
      "python3",
      ["-c", "import sys; from huggingface_hub import snapshot_download; print(snapshot_download('acme/tiny-llama'))"],
      { env: { ...process.env, HF_HOME: env.HF_HOME, HF_HUB_OFFLINE: "1", HF_HUB_DISABLE_TELEMETRY: "1", HF_ENDPOINT: "http://127.0.0.1:9" }, encoding: "utf8" },
    );
    expect(py.stderr).not.toMatch(/Error/);
    expect(py.status).toBe(0);
    expect(py.stdout.trim()).toBe(snap);
    expect(await hashTree(py.stdout.trim())).toEqual(await hashTree(base));
  });
});
