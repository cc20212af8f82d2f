/**
 * The Hub emulator over HTTP: the JSON it answers, the headers huggingface_hub reads, the redirect to the
 * CDN and its Range handling, the Hub's error codes, and the knobs that break the network on purpose.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fetch, request } from "undici";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { listAll, makeLlamaLike, writeRandomFile } from "../fixtures/models.js";
import { startHub, type Hub } from "./emulator.js";

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  h(name: string): string | undefined;
  json<T = unknown>(): T;
}

async function http(url: string, init: { method?: "GET" | "HEAD" | "POST"; headers?: Record<string, string>; body?: string } = {}): Promise<Res> {
  const r = await request(url, { method: init.method ?? "GET", headers: init.headers, body: init.body });
  const body = Buffer.from(await r.body.arrayBuffer());
  return {
    status: r.statusCode,
    headers: r.headers,
    body,
    h: (name) => {
      const v = r.headers[name.toLowerCase()];
      return Array.isArray(v) ? v[0] : v;
    },
    json: <T>() => JSON.parse(body.toString("utf8")) as T,
  };
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const gitBlob = (b: Buffer) => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");
const pointer = (sha: string, size: number) => `version https://git-lfs.github.com/spec/v1\noid sha256:${sha}\nsize ${size}\n`;
const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });

const TOKENS = {
  hf_alice: { user: "alice", gatedAccess: ["acme/gated"] },
  hf_bob: { user: "bob" },
  hf_acme: { user: "acme" },
};
const RANDOM_SIZE = 300_000;

let tmp: string;
let model: string;
let hub: Hub;
let sha1: string;
let sha2: string;
let prSha: string;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "cake-hub-emu-"));
  model = join(tmp, "model");
  await makeLlamaLike(model, { hidden: 64, layers: 1, vocab: 128, shards: 2 });
  await mkdir(join(model, "sub", "dir"), { recursive: true });
  await writeFile(join(model, "sub", "dir", "a.txt"), "hello from a nested folder\n");
  await writeRandomFile(join(model, "data", "random.bin"), RANDOM_SIZE, 3);
  hub = await startHub({ pageSize: 2, tokens: TOKENS });
  hub.addRepo("acme/tiny");
  sha1 = await hub.commit("acme/tiny", model, { tags: ["v1"], message: "first" });
  const second = join(tmp, "model2");
  await cp(model, second, { recursive: true });
  await writeFile(join(second, "README.md"), "# changed\n");
  sha2 = await hub.commit("acme/tiny", second, { message: "second" });
  prSha = await hub.commit("acme/tiny", model, { branch: "refs/pr/1", message: "a pull request" });
  hub.addRepo("acme/gated", { gated: true });
  await hub.commit("acme/gated", model);
  hub.addRepo("acme/secret", { private: true });
  await hub.commit("acme/secret", model);
  hub.addRepo("other/tiny-clone");
  await hub.commit("other/tiny-clone", model);
});

afterAll(async () => {
  await hub?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe("commits", () => {
  test("shas are deterministic: same tree and parent give the same commit, a parent changes it", async () => {
    expect(sha1).toMatch(/^[0-9a-f]{40}$/);
    expect(sha2).not.toBe(sha1);
    const other = await startHub();
    try {
      expect(await other.commit("x/y", model, { message: "first" })).toBe(sha1);
      expect(await other.commit("x/y", model, { message: "another message" })).not.toBe(sha1);
    } finally {
      await other.close();
    }
  });

  test("a commit without LFS files is a real git commit: git computes the same sha", async () => {
    const dir = join(tmp, "plain");
    await mkdir(join(dir, "b"), { recursive: true });
    await writeFile(join(dir, "config.json"), '{"a":1}\n');
    await writeFile(join(dir, "b", "c.txt"), "c\n");
    const h = await startHub();
    let sha: string;
    try {
      sha = await h.commit("x/plain", dir, { message: "plain" });
    } finally {
      await h.close();
    }
    const env = {
      ...process.env,
      GIT_AUTHOR_NAME: "Cake Hub Emulator",
      GIT_AUTHOR_EMAIL: "hub-emulator@example.invalid",
      GIT_AUTHOR_DATE: "1704067200 +0000",
      GIT_COMMITTER_NAME: "Cake Hub Emulator",
      GIT_COMMITTER_EMAIL: "hub-emulator@example.invalid",
      GIT_COMMITTER_DATE: "1704067200 +0000",
    };
    const git = (...args: string[]) => execFileSync("git", ["-c", "init.defaultBranch=main", ...args], { cwd: dir, env }).toString().trim();
    git("init", "-q");
    git("add", "config.json", "b/c.txt");
    const tree = git("write-tree");
    expect(git("commit-tree", tree, "-m", "plain")).toBe(sha);
  });
});

describe("model info", () => {
  test("with blobs=true: siblings carry size, git blob id and LFS sha256/pointer size", async () => {
    const r = await http(`${hub.url}/api/models/acme/tiny/revision/v1?blobs=true`);
    expect(r.status).toBe(200);
    type Sib = { rfilename: string; size: number; blobId: string; lfs?: { sha256: string; size: number; pointerSize: number } };
    const info = r.json<{ id: string; modelId: string; author: string; sha: string; private: boolean; gated: unknown; siblings: Sib[]; usedStorage: number; lastModified: string }>();
    expect(info).toMatchObject({ id: "acme/tiny", modelId: "acme/tiny", author: "acme", sha: sha1, private: false, gated: false });
    const files = await listAll(model);
    expect(info.siblings.map((s) => s.rfilename)).toEqual(files);
    const cfg = await readFile(join(model, "config.json"));
    expect(info.siblings.find((s) => s.rfilename === "config.json")).toEqual({ rfilename: "config.json", size: cfg.length, blobId: gitBlob(cfg) });
    const shard = await readFile(join(model, "model-00001-of-00002.safetensors"));
    const p = pointer(sha256(shard), shard.length);
    expect(info.siblings.find((s) => s.rfilename === "model-00001-of-00002.safetensors")).toEqual({
      rfilename: "model-00001-of-00002.safetensors",
      size: shard.length,
      blobId: gitBlob(Buffer.from(p)),
      lfs: { sha256: sha256(shard), size: shard.length, pointerSize: Buffer.byteLength(p) },
    });
    expect(new Date(info.lastModified).getTime()).not.toBeNaN();
  });

  test("without blobs, at main, at a commit sha and at an encoded refs/pr/1", async () => {
    const main = (await http(`${hub.url}/api/models/acme/tiny`)).json<{ sha: string; siblings: object[] }>();
    expect(main.sha).toBe(sha2);
    expect(main.siblings[0]).toEqual({ rfilename: "README.md" });
    expect((await http(`${hub.url}/api/models/acme/tiny/revision/${sha1}`)).json<{ sha: string }>().sha).toBe(sha1);
    expect((await http(`${hub.url}/api/models/acme/tiny/revision/refs%2Fpr%2F1`)).json<{ sha: string }>().sha).toBe(prSha);
    const bad = await http(`${hub.url}/api/models/acme/tiny/revision/nope`);
    expect(bad.status).toBe(404);
    expect(bad.h("x-error-code")).toBe("RevisionNotFound");
  });

  test("usedStorage counts every distinct blob of every commit", async () => {
    const info = (await http(`${hub.url}/api/models/acme/tiny`)).json<{ usedStorage: number }>();
    let total = 0;
    for (const f of await listAll(model)) total += (await readFile(join(model, f))).length;
    total += Buffer.byteLength("# changed\n"); // the second commit's README
    expect(info.usedStorage).toBe(total);
  });
});

describe("tree", () => {
  type Entry = { type: string; path: string; oid: string; size: number; lfs?: { oid: string; size: number; pointerSize: number }; lastCommit?: { id: string } };

  async function all(url: string): Promise<{ entries: Entry[]; pages: number }> {
    const entries: Entry[] = [];
    let pages = 0;
    for (let next: string | undefined = url; next; ) {
      const r = await http(next);
      expect(r.status).toBe(200);
      const page = r.json<Entry[]>();
      expect(page.length).toBeLessThanOrEqual(2);
      entries.push(...page);
      pages++;
      next = /<([^>]+)>;\s*rel="next"/.exec(r.h("link") ?? "")?.[1];
    }
    return { entries, pages };
  }

  test("recursive listing is paginated with Link headers and lists files and directories", async () => {
    const first = await http(`${hub.url}/api/models/acme/tiny/tree/v1?recursive=true`);
    expect(first.json<Entry[]>()).toHaveLength(2);
    expect(first.h("link")).toMatch(new RegExp(`^<${hub.url}/api/models/acme/tiny/tree/v1\\?recursive=true&cursor=[^>]+>; rel="next"$`));
    const { entries, pages } = await all(`${hub.url}/api/models/acme/tiny/tree/v1?recursive=true`);
    const files = await listAll(model);
    expect(pages).toBe(Math.ceil((files.length + 3) / 2));
    expect(entries.filter((e) => e.type === "file").map((e) => e.path).sort()).toEqual(files);
    expect(entries.filter((e) => e.type === "directory").map((e) => e.path)).toEqual(["data", "sub", "sub/dir"]);
    const rnd = await readFile(join(model, "data", "random.bin"));
    expect(entries.find((e) => e.path === "data/random.bin")).toEqual({
      type: "file",
      path: "data/random.bin",
      size: RANDOM_SIZE,
      oid: gitBlob(Buffer.from(pointer(sha256(rnd), RANDOM_SIZE))),
      lfs: { oid: sha256(rnd), size: RANDOM_SIZE, pointerSize: Buffer.byteLength(pointer(sha256(rnd), RANDOM_SIZE)) },
    });
  });

  test("non-recursive listing: directories first, then the folder's own files; sub-paths URL-encoded", async () => {
    const { entries } = await all(`${hub.url}/api/models/acme/tiny/tree/main`);
    expect(entries.slice(0, 2).map((e) => [e.type, e.path])).toEqual([
      ["directory", "data"],
      ["directory", "sub"],
    ]);
    expect(entries.some((e) => e.path.includes("/"))).toBe(false);
    const nested = await http(`${hub.url}/api/models/acme/tiny/tree/main/sub%2Fdir`);
    expect(nested.json<Entry[]>().map((e) => e.path)).toEqual(["sub/dir/a.txt"]);
    const plain = await http(`${hub.url}/api/models/acme/tiny/tree/main/sub/dir?expand=true`);
    const [a] = plain.json<Entry[]>();
    expect(a!.lastCommit!.id).toBe(sha1); // unchanged since the first commit
    const missing = await http(`${hub.url}/api/models/acme/tiny/tree/main/nope`);
    expect(missing.status).toBe(404);
    expect(missing.h("x-error-code")).toBe("EntryNotFound");
    expect((await http(`${hub.url}/api/models/acme/tiny/tree/main?cursor=garbage`)).status).toBe(400);
  });
});

describe("paths-info", () => {
  test("form-encoded body (what huggingface_hub sends)", async () => {
    const r = await http(`${hub.url}/api/models/acme/tiny/paths-info/main`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "paths=config.json&paths=sub&paths=missing.txt&expand=true",
    });
    expect(r.status).toBe(200);
    const out = r.json<Array<{ type: string; path: string; size: number; lastCommit?: { id: string } }>>();
    expect(out.map((e) => [e.type, e.path])).toEqual([
      ["file", "config.json"],
      ["directory", "sub"],
    ]);
    expect(out[0]!.size).toBe((await readFile(join(model, "config.json"))).length);
    expect(out[0]!.lastCommit!.id).toBe(sha1);
  });

  test("JSON body", async () => {
    const r = await http(`${hub.url}/api/models/acme/tiny/paths-info/main`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ paths: ["README.md", "data/random.bin"], expand: false }),
    });
    const out = r.json<Array<{ path: string; oid: string; lfs?: unknown; lastCommit?: unknown }>>();
    expect(out.map((e) => e.path)).toEqual(["README.md", "data/random.bin"]);
    expect(out[0]!.oid).toBe(gitBlob(Buffer.from("# changed\n")));
    expect(out[0]!.lfs).toBeUndefined();
    expect(out[1]!.lfs).toBeDefined();
    expect(out[0]!.lastCommit).toBeUndefined();
  });
});

describe("search", () => {
  type Item = { id: string; modelId: string; private: boolean; gated: unknown; _id: string };
  test("matches id substrings, filters by author, paginates past the limit, hides private repos", async () => {
    const r = await http(`${hub.url}/api/models?search=tiny`);
    expect(r.json<Item[]>().map((m) => m.id)).toEqual(["acme/tiny", "other/tiny-clone"]);
    expect(r.h("link")).toBeUndefined();
    const p1 = await http(`${hub.url}/api/models?search=tiny&limit=1`);
    expect(p1.json<Item[]>().map((m) => m.id)).toEqual(["acme/tiny"]);
    const next = /<([^>]+)>; rel="next"/.exec(p1.h("link") ?? "")?.[1];
    expect(next).toBeDefined();
    expect((await http(next!)).json<Item[]>().map((m) => m.id)).toEqual(["other/tiny-clone"]);
    expect((await http(`${hub.url}/api/models?author=other`)).json<Item[]>().map((m) => m.id)).toEqual(["other/tiny-clone"]);
    expect((await http(`${hub.url}/api/models?search=secret`)).json<Item[]>()).toEqual([]);
    const owner = await http(`${hub.url}/api/models?search=secret`, { headers: bearer("hf_acme") });
    expect(owner.json<Item[]>().map((m) => [m.id, m.private])).toEqual([["acme/secret", true]]);
    const gated = (await http(`${hub.url}/api/models?search=gated`)).json<Item[]>();
    expect(gated).toMatchObject([{ id: "acme/gated", modelId: "acme/gated", private: false, gated: "manual" }]);
  });
});

describe("resolve and CDN", () => {
  test("non-LFS file: HEAD and GET with ETag = git blob id, X-Repo-Commit, Range", async () => {
    const cfg = await readFile(join(model, "config.json"));
    const head = await http(`${hub.url}/acme/tiny/resolve/main/config.json`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.h("etag")).toBe(`"${gitBlob(cfg)}"`);
    expect(head.h("x-repo-commit")).toBe(sha2);
    expect(head.h("content-length")).toBe(String(cfg.length));
    expect(head.h("accept-ranges")).toBe("bytes");
    expect(head.h("content-type")).toMatch(/^application\/json/);
    expect(head.body.length).toBe(0);
    const get = await http(`${hub.url}/acme/tiny/resolve/${sha1}/config.json`);
    expect(get.status).toBe(200);
    expect(get.body.equals(cfg)).toBe(true);
    expect(get.h("x-repo-commit")).toBe(sha1);
    const part = await http(`${hub.url}/acme/tiny/resolve/v1/config.json`, { headers: { range: "bytes=2-5" } });
    expect(part.status).toBe(206);
    expect(part.h("content-range")).toBe(`bytes 2-5/${cfg.length}`);
    expect(part.body.equals(cfg.subarray(2, 6))).toBe(true);
    const nested = await http(`${hub.url}/acme/tiny/resolve/refs%2Fpr%2F1/sub/dir/a.txt`);
    expect(nested.body.toString()).toBe("hello from a nested folder\n");
    expect(nested.h("x-repo-commit")).toBe(prSha);
  });

  test("LFS file: 302 to the CDN with X-Linked-Etag/Size; the CDN serves it with Range, clamping and 416", async () => {
    const bytes = await readFile(join(model, "data", "random.bin"));
    const sha = sha256(bytes);
    const key = "acme/tiny/data/random.bin";
    hub.counters.reset();
    const head = await http(`${hub.url}/acme/tiny/resolve/v1/data/random.bin`, { method: "HEAD" });
    expect(head.status).toBe(302);
    expect(head.h("x-linked-etag")).toBe(`"${sha}"`);
    expect(head.h("x-linked-size")).toBe(String(RANDOM_SIZE));
    expect(head.h("x-repo-commit")).toBe(sha1);
    const location = head.h("location")!;
    expect(location.startsWith(`${hub.cdnUrl}/repos/`)).toBe(true);
    expect(location).toContain(`/${sha}?`);
    expect(new URL(location).searchParams.get("Expires")).toMatch(/^\d+$/);
    const viaGet = await http(`${hub.url}/acme/tiny/resolve/v1/data/random.bin`);
    expect(viaGet.status).toBe(302);
    expect(viaGet.body.length).toBe(0);

    const cdnHead = await http(location, { method: "HEAD" });
    expect(cdnHead.status).toBe(200);
    expect(cdnHead.h("content-length")).toBe(String(RANDOM_SIZE));
    expect(cdnHead.h("accept-ranges")).toBe("bytes");
    expect(cdnHead.h("etag")).toBe(`"${sha}"`);
    const whole = await http(location);
    expect(whole.status).toBe(200);
    expect(sha256(whole.body)).toBe(sha);
    const mid = await http(location, { headers: { range: "bytes=1000-1999" } });
    expect(mid.status).toBe(206);
    expect(mid.h("content-range")).toBe(`bytes 1000-1999/${RANDOM_SIZE}`);
    expect(mid.body.equals(bytes.subarray(1000, 2000))).toBe(true);
    const clamped = await http(location, { headers: { range: `bytes=${RANDOM_SIZE - 10}-${RANDOM_SIZE + 500}` } });
    expect(clamped.status).toBe(206);
    expect(clamped.h("content-range")).toBe(`bytes ${RANDOM_SIZE - 10}-${RANDOM_SIZE - 1}/${RANDOM_SIZE}`);
    expect(clamped.body.equals(bytes.subarray(RANDOM_SIZE - 10))).toBe(true);
    const open = await http(location, { headers: { range: `bytes=${RANDOM_SIZE - 3}-` } });
    expect(open.body.equals(bytes.subarray(RANDOM_SIZE - 3))).toBe(true);
    const suffix = await http(location, { headers: { range: "bytes=-7" } });
    expect(suffix.body.equals(bytes.subarray(RANDOM_SIZE - 7))).toBe(true);
    const beyond = await http(location, { headers: { range: `bytes=${RANDOM_SIZE}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.h("content-range")).toBe(`bytes */${RANDOM_SIZE}`);

    expect(hub.counters.rangesByFile.get(key)).toEqual([
      [0, RANDOM_SIZE],
      [1000, 2000],
      [RANDOM_SIZE - 10, RANDOM_SIZE],
      [RANDOM_SIZE - 3, RANDOM_SIZE],
      [RANDOM_SIZE - 7, RANDOM_SIZE],
    ]);
    expect(hub.counters.bytesByFile.get(key)).toBe(RANDOM_SIZE + 1000 + 10 + 3 + 7);
    expect(hub.counters.bytesServed).toBe(RANDOM_SIZE + 1000 + 10 + 3 + 7);
    expect(hub.counters.requests).toBe(9);
    expect(hub.counters.cdnAuthorizationSeen).toBe(0);

    const withToken = await http(location, { headers: bearer("hf_alice") });
    expect(withToken.status).toBe(200);
    expect(hub.counters.cdnAuthorizationSeen).toBe(1);
    const forged = new URL(location);
    forged.searchParams.set("Signature", "AAAA");
    expect((await http(forged.toString())).status).toBe(403);
  });

  test("fetch() following the redirect does not forward Authorization to the CDN", async () => {
    hub.counters.reset();
    const r = await fetch(`${hub.url}/acme/gated/resolve/main/data/random.bin`, { headers: bearer("hf_alice") });
    expect(r.status).toBe(200);
    expect(sha256(Buffer.from(await r.arrayBuffer()))).toBe(sha256(await readFile(join(model, "data", "random.bin"))));
    expect(hub.counters.cdnAuthorizationSeen).toBe(0);
    expect(hub.counters.bytesByFile.get("acme/gated/data/random.bin")).toBe(RANDOM_SIZE);
  });

  test("resolveCache: regular files at a branch get a relative 307 to /api/resolve-cache pinned to the commit", async () => {
    const cfg = await readFile(join(model, "config.json"));
    hub.setKnobs({ resolveCache: true });
    try {
      const head = await http(`${hub.url}/acme/tiny/resolve/main/config.json`, { method: "HEAD" });
      expect(head.status).toBe(307);
      expect(head.h("x-repo-commit")).toBe(sha2);
      const loc = head.h("location")!;
      expect(loc.startsWith(`/api/resolve-cache/models/acme/tiny/${sha2}/config.json?`)).toBe(true);
      const pinned = await http(`${hub.url}${loc}`);
      expect(pinned.status).toBe(200);
      expect(pinned.h("etag")).toBe(`"${gitBlob(cfg)}"`);
      expect(pinned.body.equals(cfg)).toBe(true);
      expect((await http(`${hub.url}/acme/tiny/resolve/${sha1}/config.json`, { method: "HEAD" })).status).toBe(200);
      expect((await http(`${hub.url}/acme/tiny/resolve/main/data/random.bin`, { method: "HEAD" })).status).toBe(302);
      const gated = await http(`${hub.url}/acme/gated/resolve/main/config.json`, { method: "HEAD", headers: bearer("hf_alice") });
      expect(gated.status).toBe(307);
      const anon = await http(`${hub.url}${gated.h("location")!}`);
      expect(anon.status).toBe(401);
      expect(anon.h("x-error-code")).toBe("GatedRepo");
    } finally {
      hub.setKnobs({ resolveCache: false });
    }
  });

  test("a file changed on disk after its commit is refused, not served with stale hashes", async () => {
    const dir = join(tmp, "mutable");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "a.txt"), "one\n");
    hub.addRepo("acme/mutable");
    await hub.commit("acme/mutable", dir);
    expect((await http(`${hub.url}/acme/mutable/resolve/main/a.txt`)).body.toString()).toBe("one\n");
    await writeFile(join(dir, "a.txt"), "two, longer\n");
    const r = await http(`${hub.url}/acme/mutable/resolve/main/a.txt`);
    expect(r.status).toBe(500);
    expect(r.h("x-error-message")).toMatch(/changed on disk/);
  });
});

describe("errors like the Hub", () => {
  const expectError = (r: Res, status: number, code: string | undefined, head = false) => {
    expect(r.status).toBe(status);
    expect(r.h("x-error-code")).toBe(code);
    expect(r.h("x-error-message")).toBeTruthy();
    if (head) expect(r.body.length).toBe(0);
    else expect(r.json<{ error: string }>().error).toBe(r.h("x-error-message"));
  };

  test("RepoNotFound is 401 without a token, 404 with one; private repos look missing to others", async () => {
    expectError(await http(`${hub.url}/acme/nope/resolve/main/config.json`, { method: "GET" }), 401, "RepoNotFound");
    expectError(await http(`${hub.url}/acme/nope/resolve/main/config.json`, { headers: bearer("hf_bob") }), 404, "RepoNotFound");
    expectError(await http(`${hub.url}/api/models/acme/nope`), 401, "RepoNotFound");
    expectError(await http(`${hub.url}/api/models/acme/secret`), 401, "RepoNotFound");
    expectError(await http(`${hub.url}/api/models/acme/secret/tree/main`, { headers: bearer("hf_bob") }), 404, "RepoNotFound");
    const owner = await http(`${hub.url}/api/models/acme/secret`, { headers: bearer("hf_acme") });
    expect(owner.status).toBe(200);
    expect(owner.json<{ private: boolean }>().private).toBe(true);
  });

  test("RevisionNotFound and EntryNotFound (with X-Repo-Commit)", async () => {
    expectError(await http(`${hub.url}/acme/tiny/resolve/v9/config.json`, { method: "HEAD" }), 404, "RevisionNotFound", true);
    expectError(await http(`${hub.url}/acme/tiny/resolve/${"0".repeat(40)}/config.json`), 404, "RevisionNotFound");
    const entry = await http(`${hub.url}/acme/tiny/resolve/v1/nope.json`);
    expectError(entry, 404, "EntryNotFound");
    expect(entry.h("x-repo-commit")).toBe(sha1);
  });

  test("gated repo: 401 GatedRepo without a token, 403 without access, 200 with access; metadata stays public", async () => {
    const url = `${hub.url}/acme/gated/resolve/main/config.json`;
    expectError(await http(url), 401, "GatedRepo");
    expectError(await http(url, { headers: bearer("hf_bob") }), 403, "GatedRepo");
    const ok = await http(url, { headers: bearer("hf_alice") });
    expect(ok.status).toBe(200);
    expect(ok.body.equals(await readFile(join(model, "config.json")))).toBe(true);
    const info = await http(`${hub.url}/api/models/acme/gated`);
    expect(info.status).toBe(200);
    expect(info.json<{ gated: unknown }>().gated).toBe("manual");
  });

  test("an unknown token is refused everywhere with the Hub's message", async () => {
    const r = await http(`${hub.url}/api/models/acme/tiny`, { headers: bearer("hf_forged") });
    expectError(r, 401, undefined);
    expect(r.h("x-error-message")).toBe("Invalid credentials in Authorization header");
    expect((await http(`${hub.url}/api/whoami-v2`, { headers: bearer("hf_alice") })).json<{ name: string }>().name).toBe("alice");
  });
});

describe("knobs", () => {
  test("fail429Every answers every Nth request 429 with Retry-After; fail503Every 503", async () => {
    hub.counters.reset();
    hub.setKnobs({ fail429Every: 2, retryAfterSeconds: 3 });
    try {
      const statuses: number[] = [];
      let retryAfter: string | undefined;
      for (let i = 0; i < 4; i++) {
        const r = await http(`${hub.url}/api/models/acme/tiny`);
        statuses.push(r.status);
        if (r.status === 429) retryAfter = r.h("retry-after");
      }
      expect(statuses).toEqual([200, 429, 200, 429]);
      expect(retryAfter).toBe("3");
      expect(hub.counters.injected429).toBe(2);
      hub.setKnobs({ fail429Every: 0, fail503Every: 3 });
      const s2: number[] = [];
      for (let i = 0; i < 3; i++) s2.push((await http(`${hub.url}/acme/tiny/resolve/main/config.json`, { method: "HEAD" })).status);
      expect(s2).toEqual([200, 200, 503]);
      expect(hub.counters.injected503).toBe(1);
    } finally {
      hub.setKnobs({ fail429Every: 0, fail503Every: 0 });
    }
  });

  test("dropAfterBytes + dropEvery cut every Nth content request after that many bytes", async () => {
    const url = `${hub.url}/acme/tiny/resolve/main/config.json`;
    const size = (await readFile(join(model, "config.json"))).length;
    hub.counters.reset();
    hub.setKnobs({ dropAfterBytes: 100, dropEvery: 2 });
    try {
      expect((await http(url)).body.length).toBe(size);
      const cut = await request(url);
      expect(cut.statusCode).toBe(200);
      await expect(cut.body.arrayBuffer()).rejects.toThrow();
      expect((await http(url)).body.length).toBe(size);
    } finally {
      hub.setKnobs({ dropAfterBytes: undefined, dropEvery: undefined });
    }
    expect(hub.counters.dropped).toBe(1);
    expect(hub.counters.rangesByFile.get("acme/tiny/config.json")).toEqual([
      [0, size],
      [0, 100],
      [0, size],
    ]);
    expect(hub.counters.bytesServed).toBe(2 * size + 100);
  });

  test("bandwidth caps each connection; latencyMs delays each answer", async () => {
    const loc = (await http(`${hub.url}/acme/tiny/resolve/main/data/random.bin`, { method: "HEAD" })).h("location")!;
    hub.setKnobs({ bandwidth: 1_000_000 });
    try {
      const t0 = performance.now();
      const r = await http(loc);
      const ms = performance.now() - t0;
      expect(r.body.length).toBe(RANDOM_SIZE);
      expect(ms).toBeGreaterThanOrEqual(270); // 300 kB at 1 MB/s
    } finally {
      hub.setKnobs({ bandwidth: 0 });
    }
    hub.setKnobs({ latencyMs: 150 });
    try {
      const t0 = performance.now();
      expect((await http(`${hub.url}/api/models/acme/tiny`)).status).toBe(200);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(145);
    } finally {
      hub.setKnobs({ latencyMs: 0 });
    }
  });

  test("xet: picked LFS files resolve to the Xet bridge with X-Xet-Hash and Link; the bridge serves Range, refuses a forged link", async () => {
    const bytes = await readFile(join(model, "data", "random.bin"));
    hub.counters.reset();
    hub.setKnobs({ xet: (path) => path === "data/random.bin" });
    try {
      const head = await http(`${hub.url}/acme/tiny/resolve/v1/data/random.bin`, { method: "HEAD" });
      expect(head.status).toBe(302);
      expect(head.h("x-repo-commit")).toBe(sha1);
      expect(head.h("x-linked-etag")).toBe(`"${sha256(bytes)}"`);
      expect(head.h("x-linked-size")).toBe(String(RANDOM_SIZE));
      const hash = head.h("x-xet-hash")!;
      expect(hash).toMatch(/^[0-9a-f]{64}$/);
      expect(head.h("link")).toBe(
        `<${hub.url}/api/models/acme/tiny/xet-read-token/${sha1}>; rel="xet-auth", <${hub.xetUrl}/v1/reconstructions/${hash}>; rel="xet-reconstruction-info"`,
      );
      const location = head.h("location")!;
      expect(location).toMatch(new RegExp(`^${hub.xetUrl}/xet-bridge-us/[0-9a-f]{24}/${hash}\\?X-Amz-Algorithm=`));
      expect(new URL(location).searchParams.get("X-Amz-Expires")).toBe("3600");
      // Not picked: the CDN as before.
      const other = await http(`${hub.url}/acme/tiny/resolve/v1/model-00001-of-00002.safetensors`, { method: "HEAD" });
      expect(other.h("location")!.startsWith(`${hub.cdnUrl}/repos/`)).toBe(true);
      expect(other.h("x-xet-hash")).toBeUndefined();

      const whole = await http(location);
      expect(whole.status).toBe(200);
      expect(whole.body.equals(bytes)).toBe(true);
      const mid = await http(location, { headers: { range: "bytes=1000-1999" } });
      expect(mid.status).toBe(206);
      expect(mid.h("content-range")).toBe(`bytes 1000-1999/${RANDOM_SIZE}`);
      expect(mid.body.equals(bytes.subarray(1000, 2000))).toBe(true);
      expect(hub.counters.xetRequests).toBe(2);
      expect(hub.counters.rangesByFile.get("acme/tiny/data/random.bin")).toEqual([
        [0, RANDOM_SIZE],
        [1000, 2000],
      ]);

      hub.setKnobs({ xetRangeRequiredAbove: 1000 });
      const noRange = await http(location);
      expect(noRange.status).toBe(400);
      expect(noRange.body.toString()).toContain("A Range header is required for objects larger than 1000 bytes.");
      expect((await http(location, { method: "HEAD" })).status).toBe(200);
      expect((await http(location, { headers: { range: "bytes=0-" } })).status).toBe(206);

      const forged = new URL(location);
      forged.searchParams.set("X-Amz-Signature", "0".repeat(64));
      const refused = await http(forged.toString());
      expect(refused.status).toBe(403);
      expect(refused.body.toString()).toContain("<Code>SignatureDoesNotMatch</Code>");
      expect(hub.counters.cdnAuthorizationSeen).toBe(0);
      await http(location, { headers: { ...bearer("hf_alice"), range: "bytes=0-9" } });
      expect(hub.counters.cdnAuthorizationSeen).toBe(1);

      // The tree lists the hash, as the Hub does for Xet files; the Xet protocol itself says it is not emulated.
      const tree = await http(`${hub.url}/api/models/acme/tiny/tree/v1/data`);
      expect(tree.json<Array<{ path: string; xetHash?: string }>>()).toEqual([expect.objectContaining({ path: "data/random.bin", xetHash: hash })]);
      const token = await http(`${hub.url}/api/models/acme/tiny/xet-read-token/${sha1}`);
      expect(token.status).toBe(501);
      expect(token.h("x-error-message")).toContain("HF_HUB_DISABLE_XET=1");
    } finally {
      hub.setKnobs({ xet: undefined, xetRangeRequiredAbove: undefined });
    }
  });

  test("linkTtlSeconds and expiredLinkStatus: an expired CDN or bridge link answers 403, or 400 when asked", async () => {
    const resolve = async (file: string) => (await http(`${hub.url}/acme/tiny/resolve/v1/${file}`, { method: "HEAD" })).h("location")!;
    hub.counters.reset();
    hub.setKnobs({ xet: (path) => path === "data/random.bin", linkTtlSeconds: 5 });
    try {
      const cdn = await resolve("model-00001-of-00002.safetensors");
      expect(Number(new URL(cdn).searchParams.get("Expires")) - Date.now() / 1000).toBeGreaterThan(4);
      expect(Number(new URL(cdn).searchParams.get("Expires")) - Date.now() / 1000).toBeLessThanOrEqual(6);
      expect(new URL(await resolve("data/random.bin")).searchParams.get("X-Amz-Expires")).toBe("5");
      expect((await http(cdn, { headers: { range: "bytes=0-9" } })).status).toBe(206);

      // A negative lifetime hands out links that have already expired.
      hub.setKnobs({ linkTtlSeconds: -2 });
      const [oldCdn, oldBridge] = [await resolve("model-00001-of-00002.safetensors"), await resolve("data/random.bin")];
      for (const link of [oldCdn, oldBridge]) {
        const r = await http(link, { headers: { range: "bytes=0-9" } });
        expect(r.status).toBe(403);
        expect(r.body.toString()).toContain("<Code>AccessDenied</Code><Message>Request has expired</Message>");
      }
      hub.setKnobs({ expiredLinkStatus: 400 });
      for (const link of [oldCdn, oldBridge]) {
        const r = await http(link, { headers: { range: "bytes=0-9" } });
        expect(r.status).toBe(400);
        expect(r.body.toString()).toContain("<Code>ExpiredToken</Code>");
      }
      expect(hub.counters.expiredLinks).toBe(4);
      expect(hub.counters.xetRequests).toBe(0);
    } finally {
      hub.setKnobs({ xet: undefined, linkTtlSeconds: undefined, expiredLinkStatus: undefined });
    }
  });

  test("rateLimitStyle 'ratelimit': 429 with RateLimit and RateLimit-Policy and no Retry-After, per bucket", async () => {
    const loc = (await http(`${hub.url}/acme/tiny/resolve/main/data/random.bin`, { method: "HEAD" })).h("location")!;
    hub.setKnobs({ fail429Every: 1, rateLimitStyle: "ratelimit", retryAfterSeconds: 7 });
    try {
      const api = await http(`${hub.url}/api/models/acme/tiny`);
      expect(api.status).toBe(429);
      expect(api.h("retry-after")).toBeUndefined();
      expect(api.h("ratelimit")).toBe('"api";r=0;t=7');
      expect(api.h("ratelimit-policy")).toBe('"fixed window";"api";q=500;w=300');
      for (const url of [`${hub.url}/acme/tiny/resolve/main/config.json`, loc]) {
        const r = await http(url);
        expect(r.status).toBe(429);
        expect(r.h("ratelimit")).toBe('"resolvers";r=0;t=7');
        expect(r.h("ratelimit-policy")).toBe('"fixed window";"resolvers";q=3000;w=300');
      }
    } finally {
      hub.setKnobs({ fail429Every: 0, rateLimitStyle: undefined, retryAfterSeconds: undefined });
    }
  });

  test("resolveCache 'always' redirects regular files at a commit sha too", async () => {
    hub.counters.reset();
    hub.setKnobs({ resolveCache: "always" });
    try {
      const head = await http(`${hub.url}/acme/tiny/resolve/${sha1}/config.json`, { method: "HEAD" });
      expect(head.status).toBe(307);
      expect(head.h("location")!.startsWith(`/api/resolve-cache/models/acme/tiny/${sha1}/config.json?`)).toBe(true);
      expect((await http(`${hub.url}${head.h("location")!}`, { method: "HEAD" })).status).toBe(200);
      expect((await http(`${hub.url}/acme/tiny/resolve/${sha1}/data/random.bin`, { method: "HEAD" })).status).toBe(302);
      expect(hub.counters.resolveCacheRedirects).toBe(1);
    } finally {
      hub.setKnobs({ resolveCache: false });
    }
  });

  test("counters.reset() zeroes everything", async () => {
    await http(`${hub.url}/acme/tiny/resolve/main/config.json`);
    expect(hub.counters.requests).toBeGreaterThan(0);
    expect(hub.counters.bytesServed).toBeGreaterThan(0);
    hub.counters.reset();
    expect(hub.counters).toMatchObject({ requests: 0, bytesServed: 0, cdnAuthorizationSeen: 0, dropped: 0, injected429: 0, injected503: 0 });
    expect(hub.counters).toMatchObject({ xetRequests: 0, expiredLinks: 0, resolveCacheRedirects: 0 });
    expect(hub.counters.bytesByFile.size).toBe(0);
    expect(hub.counters.rangesByFile.size).toBe(0);
  });
});

describe("root folder", () => {
  test("serves each org/name folder as a repo with one commit on main", async () => {
    const root = join(tmp, "root");
    await cp(model, join(root, "acme", "tiny"), { recursive: true });
    const h = await startHub({ root });
    try {
      const info = (await http(`${h.url}/api/models/acme/tiny`)).json<{ sha: string; siblings: unknown[] }>();
      const n = (await listAll(model)).length;
      expect(info.sha).toBe(await h.commit("acme/tiny-again", model, { message: `Upload ${n} files` }));
      expect(info.siblings).toHaveLength((await listAll(model)).length);
    } finally {
      await h.close();
    }
  });
});
