/**
 * `cake push` / `cake pull` against a real CNCF distribution registry, and interop with the real
 * oras, crane and skopeo: what a user sees (exit codes, messages, bytes) and what crosses the wire
 * (counted by a proxy in front of the registry). Both copy the whole OCI graph of what they name
 * (oras-go's copy): a referrer brings its `subject` along.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { MT } from "../../src/format/oci.js";
import { Store } from "../../src/store/layout.js";
import { hashTree, dirBytes } from "../fixtures/models.js";
import { cake, cakeOk, spawnCake, waitFor } from "../helpers/cli.js";
import { requireTool, startRegistry } from "../registry/harness.js";
import { base, CHANGED, env, ft, proxy, reg, tmp, useFineTuneRegistry } from "../registry/finetune-fixture.js";

useFineTuneRegistry("cake-registry-");

let n = 0;
const ok = cakeOk;
const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

describe("cake push / pull with a real registry", () => {
  it("pushes a sharded model from a folder, pulls it into an empty store, exports it byte-identical", async () => {
    const pushDigest = await ok(["push", "-q", base, `${reg.host}/acme/tiny-llama:v1`], env());
    const e = env();
    const pullDigest = await ok(["pull", "-q", `${reg.host}/acme/tiny-llama:v1`], e);
    expect(pullDigest).toBe(pushDigest);
    // From a registry the store has checked each blob, not the rebuilt files: the first export hashes
    // them against the recipe, and the store remembers that for the next.
    const first = await cake(["export", `${reg.host}/acme/tiny-llama:v1`, path.join(tmp, "out-v1")], e);
    expect(first.code).toBe(0);
    expect(first.stderr).toContain("each hashed and matched against its sha256");
    expect(await hashTree(path.join(tmp, "out-v1"))).toEqual(await hashTree(base));
    const second = await cake(["export", `${reg.host}/acme/tiny-llama:v1`, path.join(tmp, "out-v1b")], e);
    expect(second.stderr).toContain("(each matched its sha256 when the store checked it)");
    expect(await hashTree(path.join(tmp, "out-v1b"))).toEqual(await hashTree(base));
    // the same registry, another repository: every blob is mounted, none uploaded
    const mount = await cake(["push", `${reg.host}/acme/tiny-llama:v1`, `${reg.host}/mirror/tiny-llama:v1`], e);
    expect(mount.code).toBe(0);
    expect(mount.stderr).toMatch(/: 0 blobs uploaded \(0 B\), \d+ mounted, 0 already there/);
    // by digest too
    const e2 = env();
    expect(await ok(["pull", "-q", `${reg.host}/acme/tiny-llama@${pushDigest}`], e2)).toBe(pushDigest);
  });

  it("a fine-tune costs only its changed tensors: on push and on pull", async () => {
    const e = env();
    await ok(["push", "-q", base, `${proxy.host}/dedup/base:v1`], e);
    proxy.reset();
    await ok(["push", "-q", ft, `${proxy.host}/dedup/base:ft`], e);
    // uploads: the changed tensors, the config and the recipe (the manifest is a PUT to /manifests/)
    const uploads = proxy.requests.filter((r) => r.kind === "upload" && r.method === "PUT" && r.status === 201);
    expect(uploads.length).toBe(CHANGED.length + 2);
    const changedBytes = (2 << 20) / 2; // bound below: each changed tensor is >= 0.5 MiB
    expect(proxy.bytes("up", undefined, "upload")).toBeGreaterThan(changedBytes);
    expect(proxy.bytes("up", undefined, "upload")).toBeLessThan((await dirBytes(ft)) / 2);

    // push again: nothing uploaded
    proxy.reset();
    await ok(["push", "-q", ft, `${proxy.host}/dedup/base:ft`], e);
    expect(proxy.count("POST", "upload")).toBe(0);
    expect(proxy.bytes("up")).toBeLessThan(20_000);

    // pull base, then the fine-tune: only the changed blobs come down
    const p = env();
    await ok(["pull", "-q", `${proxy.host}/dedup/base:v1`], p);
    proxy.reset();
    await ok(["pull", "-q", `${proxy.host}/dedup/base:ft`], p);
    const blobGets = proxy.requests.filter((r) => r.kind === "blob" && r.method === "GET");
    const diff = JSON.parse(await ok(["diff", "--json", `${proxy.host}/dedup/base:v1`, `${proxy.host}/dedup/base:ft`], p)) as { changed: { tensors: number; names: string[] }; transferBytes: number };
    expect(diff.changed.names.sort()).toEqual([...CHANGED].sort());
    expect(proxy.bytes("down", "GET", "blob")).toBe(diff.transferBytes);
    expect(new Set(blobGets.map((r) => r.path)).size).toBe(CHANGED.length + 2);
    await ok(["export", "-q", `${proxy.host}/dedup/base:ft`, path.join(tmp, "out-ft")], p);
    expect(await hashTree(path.join(tmp, "out-ft"))).toEqual(await hashTree(ft));
  });

  it("interoperates with oras, crane and skopeo", async () => {
    const oras = requireTool("oras");
    const crane = requireTool("crane");
    const skopeo = requireTool("skopeo");
    const e = env();
    const digest = await ok(["push", "-q", base, `${reg.host}/interop/model:v1`], e);

    // oras pull writes the non-tensor files under their names; cake export rebuilds the rest from that dir
    const dir = path.join(tmp, "oras-pull");
    execFileSync(oras, ["pull", "--plain-http", "-o", dir, `${reg.host}/interop/model:v1`], { stdio: "pipe" });
    for (const f of ["config.json", "tokenizer.json", "model.safetensors.index.json", "README.md"]) {
      expect(Buffer.compare(await fs.readFile(path.join(dir, f)), await fs.readFile(path.join(base, f))), f).toBe(0);
    }
    await ok(["export", "-q", dir, path.join(tmp, "out-oras")], env());
    expect(await hashTree(path.join(tmp, "out-oras"))).toEqual(await hashTree(base));

    // crane reads the manifest, byte for byte
    const manifest = execFileSync(crane, ["manifest", "--insecure", `${reg.host}/interop/model:v1`]);
    expect(sha256(manifest)).toBe(digest);

    // skopeo copies it to an OCI layout
    const layout = path.join(tmp, "skopeo-oci");
    const sk = spawnSync(skopeo, ["copy", "--src-tls-verify=false", `docker://${reg.host}/interop/model:v1`, `oci:${layout}:v1`], { encoding: "utf8" });
    expect(sk.stderr).not.toMatch(/FATA|Error/);
    expect(sk.status).toBe(0);
    const index = JSON.parse(await fs.readFile(path.join(layout, "index.json"), "utf8")) as { manifests: { digest: string }[] };
    expect(index.manifests[0]!.digest).toBe(digest);

    // oras cp to another repository; cake pulls the copy
    execFileSync(oras, ["cp", "--from-plain-http", "--to-plain-http", `${reg.host}/interop/model:v1`, `${reg.host}/interop/copy:v2`], { stdio: "pipe" });
    const c = env();
    expect(await ok(["pull", "-q", `${reg.host}/interop/copy:v2`], c)).toBe(digest);
    await ok(["export", "-q", `${reg.host}/interop/copy:v2`, path.join(tmp, "out-copy")], c);
    expect(await hashTree(path.join(tmp, "out-copy"))).toEqual(await hashTree(base));
  });

  it("a pull killed mid-blob, run again, fetches only the rest", async () => {
    const e = env();
    await ok(["push", "-q", base, `${proxy.host}/resume/model:v1`], e);
    const total = await dirBytes(base);
    const p = env();
    // Slow every blob body down so the kill lands mid-blob.
    proxy.reset();
    proxy.fault({ kind: "blob", method: "GET", times: 1000, throttle: 1_500_000 });
    const child = spawnCake(["pull", "-q", "-c", "2", "--chunk-size", String(1 << 20), `${proxy.host}/resume/model:v1`], p);
    await waitFor(() => proxy.bytes("down", "GET", "blob") > total * 0.3, 60_000, "a third of the model");
    child.kill("SIGKILL");
    await new Promise((r) => child.on("close", r));
    const first = proxy.bytes("down", "GET", "blob");
    expect(first).toBeLessThan(total);
    proxy.reset();
    await ok(["pull", "-q", `${proxy.host}/resume/model:v1`], p);
    const second = proxy.bytes("down", "GET", "blob");
    // The rest, plus at most what was received and not yet on record at the kill: per stream a journal
    // interval (256 KiB), a write batch (128 KiB) and a socket read (128 KiB); measured 0.15-0.36 MB
    // (1.7-1.9 MB with 1 MiB write batches). The config and recipe blobs fit in the 100 kB.
    expect(first + second).toBeLessThan(total + 2 * (512 << 10) + 100_000);
    await ok(["export", "-q", `${proxy.host}/resume/model:v1`, path.join(tmp, "out-resume")], p);
    expect(await hashTree(path.join(tmp, "out-resume"))).toEqual(await hashTree(base));
  });

  it("a push interrupted mid-upload, run again, uploads only what the registry lacks", async () => {
    const total = await dirBytes(base);
    const e = env();
    proxy.reset();
    // one upload cut half-way: the client resumes it in the same run
    proxy.fault({ kind: "upload", method: "PUT", cutAfterUpBytes: 300_000, when: (req) => Number(req.headers["content-length"]) > 1_000_000 });
    await ok(["push", "-q", base, `${proxy.host}/interrupt/once:v1`], e);
    expect(proxy.requests.some((r) => r.faulted && r.status === 0)).toBe(true);
    // a push killed half-way; the second run skips every blob the first one finished
    proxy.reset();
    proxy.fault({ kind: "upload", times: 1000, throttleUp: 1_500_000 });
    const child = spawnCake(["push", "-q", "-c", "2", base, `${proxy.host}/interrupt/killed:v1`], env());
    await waitFor(() => proxy.bytes("up", undefined, "upload") > total * 0.4, 60_000, "40% uploaded");
    child.kill("SIGKILL");
    await new Promise((r) => child.on("close", r));
    const first = proxy.bytes("up", undefined, "upload");
    proxy.reset();
    await ok(["push", "-q", base, `${proxy.host}/interrupt/killed:v1`], e);
    const second = proxy.bytes("up", undefined, "upload");
    expect(second).toBeLessThan(total - first * 0.5);
    expect(await ok(["pull", "-q", `${reg.host}/interrupt/killed:v1`], env())).toMatch(/^sha256:/);
  });

  it("catches a registry that serves corrupted bytes or a wrong manifest, and stores nothing of it", async () => {
    const e = env();
    await ok(["push", "-q", base, `${proxy.host}/lies/model:v1`], e);
    // a corrupted blob
    const p = env();
    proxy.fault({
      kind: "blob",
      method: "GET",
      times: 1000,
      rewrite: ({ body }) => {
        if (body.length < 1000) return undefined;
        const bad = Buffer.from(body);
        const at = bad.length >> 1;
        bad.writeUInt8(bad.readUInt8(at) ^ 0xff, at);
        return { body: bad };
      },
    });
    const r = await cake(["pull", "-q", `${proxy.host}/lies/model:v1`], p);
    proxy.reset();
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cake: .*content hashes to sha256:[0-9a-f]{64}, not sha256:[0-9a-f]{64}\n$/);
    const blobs = await fs.readdir(path.join(p.CAKE_HOME, "blobs", "sha256")).catch(() => []);
    for (const hex of blobs) expect(sha256(await fs.readFile(path.join(p.CAKE_HOME, "blobs", "sha256", hex)))).toBe(`sha256:${hex}`);
    // a manifest that is not the one asked for
    const m = env();
    const digest = await ok(["pull", "-q", `${reg.host}/lies/model:v1`], env());
    proxy.fault({ kind: "manifest", method: "GET", times: 10, rewrite: ({ body }) => ({ body: Buffer.concat([body, Buffer.from(" ")]) }) });
    const r2 = await cake(["pull", "-q", `${proxy.host}/lies/model@${digest}`], m);
    proxy.reset();
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/digest/i);
    expect((await cake(["ls", "--json"], m)).stdout.trim()).toBe("[]");
  });
});

/** The model under `manifest` in the store at `home`, tagged directly (export reads a manifest), rebuilds `base` byte for byte. */
async function exportsBase(e: Record<string, string>, manifest: string) {
  const store = new Store(e.CAKE_HOME);
  await store.tag("hf://acme/subject@main", "hf.co/acme/subject/main", { mediaType: MT.manifest, digest: manifest, size: (await store.blobSize(manifest))! });
  const out = path.join(tmp, `out-${n++}`);
  await ok(["export", "-q", "hf://acme/subject@main", out], e);
  expect(await hashTree(out)).toEqual(await hashTree(base));
}

describe("registry pull and push follow the graph", () => {
  it("a referrer oras attached to a model: pull brings the model, gc keeps it, push carries it to another repository", async () => {
    const model = await ok(["push", "-q", base, `${reg.host}/acme/signed:v1`], env());
    await fs.writeFile(path.join(tmp, "note.txt"), "reviewed");
    const referrer = execFileSync(
      requireTool("oras"),
      ["attach", "--plain-http", "--artifact-type", "application/vnd.example.note", "--format", "go-template", "--template", "{{.digest}}", `${reg.host}/acme/signed:v1`, "note.txt:text/plain"],
      { cwd: tmp },
    )
      .toString()
      .trim();
    expect(referrer).toMatch(/^sha256:[a-f0-9]{64}$/);

    const e = env();
    expect(await ok(["pull", "-q", `${reg.host}/acme/signed@${referrer}`], e)).toBe(referrer);
    const gc = await cake(["gc"], e);
    expect(gc.code).toBe(0);
    expect(gc.stderr).toMatch(/^gc: removed 0 blobs/);

    await ok(["push", "-q", `${reg.host}/acme/signed@${referrer}`, `${reg.host}/acme/copy:note`], e);
    const fresh = env();
    expect(await ok(["pull", "-q", `${reg.host}/acme/copy@${model}`], fresh)).toBe(model);
    await exportsBase(e, model);
    await exportsBase(fresh, model);
  });
});

describe("registry auth", () => {
  it("basic auth: login stores credentials as docker does; a wrong password is a clear error", async () => {
    const r = await startRegistry({ htpasswd: { user: "alice", password: "s3cret" } });
    try {
      const e = env();
      const denied = await cake(["push", "-q", base, `${r.host}/private/model:v1`], e);
      expect(denied.code).toBe(1);
      expect(denied.stderr).toMatch(new RegExp(`^cake: ${r.host.replace(/\./g, "\\.")}.*(401|UNAUTHORIZED|unauthorized)`, "i"));
      const bad = await cake(["push", "-q", "-u", "alice", "-p", "wrong", base, `${r.host}/private/model:v1`], e);
      expect(bad.code).toBe(1);
      expect(bad.stderr.trim().split("\n")).toHaveLength(1);
      expect(bad.stderr).toMatch(/unauthorized|401|credentials/i);
      const login = spawnSync(process.execPath, [path.resolve("bin/cake"), "login", r.host, "-u", "alice", "--password-stdin"], { input: "s3cret\n", env: { ...process.env, ...e }, encoding: "utf8" });
      expect(login.status).toBe(0);
      const cfg = JSON.parse(await fs.readFile(path.join(e.DOCKER_CONFIG, "config.json"), "utf8")) as { auths: Record<string, { auth: string }> };
      expect(Buffer.from(cfg.auths[r.host]!.auth, "base64").toString()).toBe("alice:s3cret");
      const digest = await ok(["push", "-q", base, `${r.host}/private/model:v1`], e);
      expect(await ok(["pull", "-q", `${r.host}/private/model:v1`], { ...env(), DOCKER_CONFIG: e.DOCKER_CONFIG })).toBe(digest);
    } finally {
      await r.close();
    }
  });

  it("token auth: push and pull through the bearer-token flow", async () => {
    const r = await startRegistry({ htpasswd: { user: "bob", password: "tok3n" }, token: true });
    try {
      const e = env();
      const digest = await ok(["push", "-q", "-u", "bob", "-p", "tok3n", base, `${r.host}/team/model:v1`], e);
      expect(await ok(["pull", "-q", "-u", "bob", "-p", "tok3n", `${r.host}/team/model:v1`], env())).toBe(digest);
      expect(r.tokenServer!.requests.length).toBeGreaterThan(0);
      const bad = await cake(["pull", "-q", "-u", "bob", "-p", "nope", `${r.host}/team/model:v1`], env());
      expect(bad.code).toBe(1);
      expect(bad.stderr.trim().split("\n")).toHaveLength(1);
    } finally {
      await r.close();
    }
  });
});
