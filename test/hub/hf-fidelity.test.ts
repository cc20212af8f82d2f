/**
 * Fidelity of the Hub emulator, judged by the real client: huggingface_hub 2.4.0 (Python) downloads,
 * lists and gets refused by the emulator exactly as it would by huggingface.co.
 *
 * Requires `python3` with `pip install huggingface_hub==2.4.0`. When that is missing the test FAILS: an
 * emulator nobody checked against the real client is not worth trusting.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test as vitestTest } from "vitest";
import { hashTree, listAll, makeFineTune, makeLlamaLike, sha256File, writeRandomFile } from "../fixtures/models.js";
import { startHub, type Hub } from "./emulator.js";

const PINNED = "2.4.0";
const PYTHON = process.env.PYTHON ?? "python3";
const SCRIPT = fileURLToPath(new URL("./hf_client.py", import.meta.url));
const INSTALL = `run \`pip install huggingface_hub==${PINNED}\``;

interface PyError {
  type: string;
  mro: string[];
  status: number | null;
  message: string;
}
type PyResult = { ok: unknown } | { error: PyError };

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeout = 90_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr: stderr + (err && code === 1 && !stderr ? String(err) : "") });
    });
  });
}

/** The environment a user would set, minus anything from this machine that could leak in (tokens, proxies). */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(HF_|HUGGING_FACE_|HUGGINGFACE_)/i.test(k) || /_proxy$/i.test(k)) continue;
    env[k] = v;
  }
  return { ...env, NO_PROXY: "*", no_proxy: "*", ...extra };
}

let tmp: string;
let hub: Hub;
let baseDir: string;
let tuneDir: string;
let v1: string;
let v2: string;
let homes = 0;

const TOKENS = {
  hf_alice_can_read_gated: { user: "alice", gatedAccess: ["acme/gated-llama"] },
  hf_bob_cannot: { user: "bob" },
};
const PAGE = 3;
/** Just above the Hub's LFS size threshold, and above the client's 10 MiB download chunk. */
const BIG = 10 * 1024 * 1024 + 5;
const CHANGED = "model.layers.1.mlp.up_proj.weight";

/** Runs hf_client.py with a fresh HF_HOME; returns one result per operation, and the client's warnings. */
async function hfLogged(ops: object[], token?: string, extra: Record<string, string> = {}): Promise<{ results: PyResult[]; log: string[] }> {
  const env = cleanEnv({
    HF_ENDPOINT: hub.url,
    HF_HUB_DISABLE_XET: "1",
    HF_HUB_DISABLE_TELEMETRY: "1",
    HF_HUB_DISABLE_PROGRESS_BARS: "1",
    HF_HUB_DISABLE_IMPLICIT_TOKEN: token ? "0" : "1",
    HF_HOME: join(tmp, `hf-home-${++homes}`),
    ...(token ? { HF_TOKEN: token } : {}),
    ...extra,
  });
  const r = await run(PYTHON, [SCRIPT, JSON.stringify(ops)], env);
  if (r.code !== 0) throw new Error(`hf_client.py exited ${r.code}:\n${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as { version: string; results: PyResult[]; log: string[] };
  expect(out.version).toBe(PINNED);
  return out;
}
const hf = async (ops: object[], token?: string): Promise<PyResult[]> => (await hfLogged(ops, token)).results;
const ok = <T>(r: PyResult | undefined): T => {
  if (!r || !("ok" in r)) throw new Error(`expected success, got ${JSON.stringify(r)}`);
  return r.ok as T;
};
const err = (r: PyResult | undefined): PyError => {
  if (!r || !("error" in r)) throw new Error(`expected an error, got ${JSON.stringify(r)}`);
  return r.error;
};
/** The shard holding the fine-tuned tensor, read from the index. */
const changedShard = async () =>
  (JSON.parse(await readFile(join(tuneDir, "model.safetensors.index.json"), "utf8")) as { weight_map: Record<string, string> }).weight_map[CHANGED]!;
const gitBlobOid = (b: Buffer) => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");

/** Set when python3 or huggingface_hub==2.4.0 is missing: every test then FAILS with it (never skips). */
let missing: Error | undefined;

beforeAll(async () => {
  const probe = await run(PYTHON, ["-c", "import huggingface_hub; print(huggingface_hub.__version__)"], cleanEnv({}), 30_000);
  if (probe.code !== 0) {
    missing = new Error(`${PYTHON} cannot import huggingface_hub (${probe.stderr.trim().split("\n").pop() ?? "?"}): ${INSTALL}`);
    return;
  }
  const version = probe.stdout.trim();
  if (version !== PINNED) {
    missing = new Error(`huggingface_hub ${version} is installed, this test is pinned to ${PINNED}: ${INSTALL}`);
    return;
  }

  tmp = await mkdtemp(join(tmpdir(), "cake-hf-fidelity-"));
  baseDir = join(tmp, "base");
  tuneDir = join(tmp, "tune");
  await makeLlamaLike(baseDir, { hidden: 256, layers: 2, shards: 3, seed: 7 });
  // A nested folder, and a file that goes to LFS by size (>= 10 MiB) rather than by name.
  await mkdir(join(baseDir, "extra"), { recursive: true });
  await writeFile(join(baseDir, "extra", "notes.txt"), "not a weight\n");
  await writeRandomFile(join(baseDir, "extra", "big.dat"), BIG, 1);
  await makeFineTune(baseDir, tuneDir, [CHANGED]);

  hub = await startHub({ pageSize: PAGE, tokens: TOKENS });
  hub.addRepo("acme/llama-tiny");
  v1 = await hub.commit("acme/llama-tiny", baseDir, { tags: ["v1.0"], message: "base weights" });
  v2 = await hub.commit("acme/llama-tiny", tuneDir, { message: "fine-tune up_proj of layer 1" });
  hub.addRepo("acme/gated-llama", { gated: true });
  await hub.commit("acme/gated-llama", baseDir);
});

afterAll(async () => {
  await hub?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** A test that fails, with the install hint, when the real client is not there. */
const test = (name: string, fn: () => Promise<void>) =>
  vitestTest(name, async () => {
    if (missing) throw missing;
    await fn();
  });

describe("huggingface_hub 2.4.0 against the emulator", () => {
  test("snapshot_download gives byte-identical files, LFS through the CDN without the token", async () => {
    hub.counters.reset();
    // Two clients with their own caches, at once.
    const [[snap], [viaLocalDir]] = await Promise.all([
      hf([{ op: "snapshot", repo: "acme/llama-tiny" }]),
      hf([{ op: "snapshot", repo: "acme/llama-tiny", local_dir: join(tmp, "local") }]),
    ]);
    const path = ok<string>(snap);
    expect(path).toContain(v2); // snapshots/<commit>
    const want = await hashTree(tuneDir);
    expect(await hashTree(path)).toEqual(want);
    expect(ok<string>(viaLocalDir)).toBe(join(tmp, "local"));
    const got = await hashTree(join(tmp, "local"));
    for (const k of [...got.keys()]) if (k.startsWith(".cache/")) got.delete(k);
    expect(got).toEqual(want);

    // Both downloads fetched every LFS file once, whole, from the CDN; nobody sent it the token.
    const shard = await changedShard();
    const size = (await readFile(join(tuneDir, shard))).length;
    expect(hub.counters.rangesByFile.get(`acme/llama-tiny/${shard}`)).toEqual([
      [0, size],
      [0, size],
    ]);
    expect(hub.counters.cdnAuthorizationSeen).toBe(0);
  });

  test("hf_hub_download of one file at a tag, at a commit sha and at main", async () => {
    const shard = await changedShard();
    const [atTag, atSha, atMain, cfg] = await hf([
      { op: "download", repo: "acme/llama-tiny", filename: shard, revision: "v1.0" },
      { op: "download", repo: "acme/llama-tiny", filename: shard, revision: v1 },
      { op: "download", repo: "acme/llama-tiny", filename: shard },
      { op: "download", repo: "acme/llama-tiny", filename: "config.json", revision: v1 },
    ]);
    const base = await sha256File(join(baseDir, shard));
    const tuned = await sha256File(join(tuneDir, shard));
    expect(base).not.toBe(tuned);
    expect(ok<string>(atTag)).toContain(`/snapshots/${v1}/`);
    expect(await sha256File(ok<string>(atTag))).toBe(base);
    expect(await sha256File(ok<string>(atSha))).toBe(base);
    expect(ok<string>(atMain)).toContain(`/snapshots/${v2}/`);
    expect(await sha256File(ok<string>(atMain))).toBe(tuned);
    expect(await readFile(ok<string>(cfg), "utf8")).toBe(await readFile(join(baseDir, "config.json"), "utf8"));
  });

  test("missing file, missing revision and missing repo raise the client's own errors", async () => {
    const [noFile, noRev, noRepo, exists, notExists] = await hf([
      { op: "download", repo: "acme/llama-tiny", filename: "nope.bin" },
      { op: "download", repo: "acme/llama-tiny", filename: "config.json", revision: "v9" },
      { op: "download", repo: "acme/nothing-here", filename: "config.json" },
      { op: "file_exists", repo: "acme/llama-tiny", filename: "extra/notes.txt" },
      { op: "file_exists", repo: "acme/llama-tiny", filename: "extra/nope.txt" },
    ]);
    expect(err(noFile).type).toBe("RemoteEntryNotFoundError");
    expect(err(noRev).type).toBe("RevisionNotFoundError");
    expect(err(noRepo).type).toBe("RepositoryNotFoundError");
    expect(err(noRepo).status).toBe(401);
    expect(ok<boolean>(exists)).toBe(true);
    expect(ok<boolean>(notExists)).toBe(false);
  });

  test("list_repo_tree(recursive=True) follows Link pages and sees every file with its git oid and LFS info", async () => {
    type Entry = { type: string; path: string; size?: number; blob_id?: string; lfs: { sha256: string; size: number } | null };
    const [tree, sub] = await hf([
      { op: "tree", repo: "acme/llama-tiny", recursive: true, revision: "v1.0" },
      { op: "tree", repo: "acme/llama-tiny", path: "extra" },
    ]);
    const entries = ok<Entry[]>(tree);
    const local = await listAll(baseDir);
    expect(local.length).toBeGreaterThan(PAGE * 2); // so the client had to follow several pages
    expect(entries.filter((e) => e.type === "file").map((e) => e.path).sort()).toEqual(local);
    expect(entries.filter((e) => e.type === "directory").map((e) => e.path)).toEqual(["extra"]);
    for (const e of entries.filter((x) => x.type === "file")) {
      const bytes = await readFile(join(baseDir, e.path));
      expect(e.size).toBe(bytes.length);
      const lfs = e.path.endsWith(".safetensors") || e.path === "extra/big.dat";
      if (lfs) {
        expect(e.lfs).toEqual(expect.objectContaining({ sha256: createHash("sha256").update(bytes).digest("hex"), size: bytes.length }));
      } else {
        expect(e.lfs).toBeNull();
        expect(e.blob_id).toBe(gitBlobOid(bytes));
      }
    }
    expect(ok<Entry[]>(sub).map((e) => e.path)).toEqual(["extra/big.dat", "extra/notes.txt"]);
  });

  test("model_info, get_paths_info, list_models and list_repo_refs parse", async () => {
    type Info = { id: string; sha: string; gated: unknown; siblings: Array<{ rfilename: string; size: number; lfs: { sha256: string } | null }> };
    const [info, paths, models, byAuthor, refs] = await hf([
      { op: "info", repo: "acme/llama-tiny", files_metadata: true, revision: "v1.0" },
      { op: "paths_info", repo: "acme/llama-tiny", paths: ["config.json", "extra", "missing.txt"], revision: v1 },
      { op: "list_models", search: "llama" },
      { op: "list_models", author: "acme", limit: 1 },
      { op: "refs", repo: "acme/llama-tiny" },
    ]);
    const i = ok<Info>(info);
    expect(i.sha).toBe(v1);
    expect(i.siblings.map((s) => s.rfilename).sort()).toEqual(await listAll(baseDir));
    const cfg = i.siblings.find((s) => s.rfilename === "config.json")!;
    expect(cfg.size).toBe((await readFile(join(baseDir, "config.json"))).length);
    expect(cfg.lfs).toBeNull();
    expect(i.siblings.find((s) => s.rfilename === "model-00001-of-00003.safetensors")!.lfs!.sha256).toBe(
      await sha256File(join(baseDir, "model-00001-of-00003.safetensors")),
    );
    expect(ok<Array<{ type: string; path: string }>>(paths).map((p) => [p.type, p.path])).toEqual([
      ["file", "config.json"],
      ["directory", "extra"],
    ]);
    expect(ok<string[]>(models)).toEqual(["acme/gated-llama", "acme/llama-tiny"]);
    expect(ok<string[]>(byAuthor)).toHaveLength(1);
    expect(ok(refs)).toEqual({ branches: { main: v2 }, tags: { "v1.0": v1 } });
  });

  test("gated repo: GatedRepoError without a token or without access, downloads with one", async () => {
    hub.counters.reset();
    const [[anon], [bob]] = await Promise.all([
      hf([{ op: "snapshot", repo: "acme/gated-llama" }]),
      hf([{ op: "download", repo: "acme/gated-llama", filename: "config.json" }], "hf_bob_cannot"),
    ]);
    expect(err(anon).type).toBe("GatedRepoError");
    expect(err(anon).status).toBe(401);
    expect(err(bob).type).toBe("GatedRepoError");
    expect(err(bob).status).toBe(403);
    const [alice] = await hf([{ op: "snapshot", repo: "acme/gated-llama" }], "hf_alice_can_read_gated");
    expect(await hashTree(ok<string>(alice))).toEqual(await hashTree(baseDir));
    expect(hub.counters.bytesByFile.get("acme/gated-llama/extra/big.dat")).toBe(BIG);
    // The client dropped its token before following the redirect off the Hub host.
    expect(hub.counters.cdnAuthorizationSeen).toBe(0);
  });

  test("relative 307 redirects to /api/resolve-cache are followed on the Hub host with the token kept", async () => {
    hub.counters.reset();
    hub.setKnobs({ resolveCache: true });
    try {
      const [cfg, shard] = await hf(
        [
          { op: "download", repo: "acme/gated-llama", filename: "config.json" },
          { op: "download", repo: "acme/gated-llama", filename: "extra/notes.txt", revision: "main" },
        ],
        "hf_alice_can_read_gated",
      );
      expect(await readFile(ok<string>(cfg), "utf8")).toBe(await readFile(join(baseDir, "config.json"), "utf8"));
      expect(await readFile(ok<string>(shard), "utf8")).toBe("not a weight\n");
    } finally {
      hub.setKnobs({ resolveCache: false });
    }
    expect(hub.counters.bytesByFile.get("acme/gated-llama/config.json")).toBe((await readFile(join(baseDir, "config.json"))).length);
    expect(hub.counters.resolveCacheRedirects).toBe(2); // the HEAD of each; the GET then goes to the location found
  });

  test("Xet-backed files: the client takes them for Xet ones and, with HF_HUB_DISABLE_XET=1, downloads them from the Xet bridge without its token", async () => {
    hub.counters.reset();
    hub.setKnobs({ xet: true });
    try {
      const [snap] = await hf([{ op: "snapshot", repo: "acme/gated-llama" }], "hf_alice_can_read_gated");
      expect(await hashTree(ok<string>(snap))).toEqual(await hashTree(baseDir));
      // Proof that the client took the files for Xet ones: with Xet on (hf_xet is installed), it asks for a read token.
      const shard = "model-00001-of-00003.safetensors";
      const xetOn = await hfLogged([{ op: "download", repo: "acme/gated-llama", filename: shard }], "hf_alice_can_read_gated", { HF_HUB_DISABLE_XET: "0" });
      expect(err(xetOn.results[0]).status).toBe(501);
      expect(err(xetOn.results[0]).message).toContain("xet-read-token");
    } finally {
      hub.setKnobs({ xet: false });
    }
    // Every LFS file (3 shards and big.dat) came from the bridge, once and whole; the token stayed on the Hub.
    expect(hub.counters.xetRequests).toBe(4);
    expect(hub.counters.rangesByFile.get("acme/gated-llama/extra/big.dat")).toEqual([[0, BIG]]);
    expect(hub.counters.cdnAuthorizationSeen).toBe(0);
  });

  test("a 429 with the Hub's RateLimit headers and no Retry-After: the client waits t + 1 s and succeeds, or names the limit", async () => {
    hub.counters.reset();
    // The HEAD passes, the GET of the file is refused once.
    hub.setKnobs({ fail429Every: 2, rateLimitStyle: "ratelimit", retryAfterSeconds: 1 });
    let out: Awaited<ReturnType<typeof hfLogged>>;
    let refused: PyResult | undefined;
    try {
      out = await hfLogged([{ op: "download", repo: "acme/llama-tiny", filename: "config.json", revision: v1 }]);
      // file_exists does not retry: the error it raises is read from the RateLimit headers.
      hub.setKnobs({ fail429Every: 1 });
      [refused] = await hf([{ op: "file_exists", repo: "acme/llama-tiny", filename: "config.json" }]);
    } finally {
      hub.setKnobs({ fail429Every: 0, rateLimitStyle: undefined, retryAfterSeconds: undefined });
    }
    expect(await readFile(ok<string>(out.results[0]), "utf8")).toBe(await readFile(join(baseDir, "config.json"), "utf8"));
    expect(out.log).toContainEqual(expect.stringMatching(/^Rate limited\. Waiting 2\.0s before retry/));
    expect(err(refused).status).toBe(429);
    expect(err(refused).message).toContain("you have reached your 'resolvers' rate limit.\nRetry after 1 seconds (0/3000 requests remaining in current 300s window).");
    expect(hub.counters.injected429).toBe(2);
  });

  test("a connection cut mid-body is resumed with a Range request", async () => {
    // huggingface_hub buffers 10 MiB (DOWNLOAD_CHUNK_SIZE) before writing: a cut before a full chunk arrived restarts
    // from byte 0, a cut after it resumes with `Range: bytes=<10 MiB>-`. Cut exactly there.
    const cutAt = 10 * 1024 * 1024;
    hub.counters.reset();
    hub.setKnobs({ dropAfterBytes: cutAt, dropEvery: 1 });
    try {
      const [r] = await hf([{ op: "download", repo: "acme/llama-tiny", filename: "extra/big.dat", revision: v1 }]);
      expect(await sha256File(ok<string>(r))).toBe(await sha256File(join(baseDir, "extra", "big.dat")));
    } finally {
      hub.setKnobs({ dropAfterBytes: undefined });
    }
    expect(hub.counters.dropped).toBe(1);
    expect(hub.counters.rangesByFile.get("acme/llama-tiny/extra/big.dat")).toEqual([
      [0, cutAt],
      [cutAt, BIG],
    ]);
  });
});
