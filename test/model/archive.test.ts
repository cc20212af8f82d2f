/**
 * `cake save` / `cake load`: OCI archives for air-gapped copies, end to end with the built CLI.
 * A saved archive is what skopeo reads (`oci-archive:`), it loads into an empty store from which
 * `cake export` rebuilds the model byte for byte, and hostile or damaged archives change nothing
 * they should not: a flipped byte is caught by digest, odd entry names are never written.
 */
import { execFile, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { saveArchive } from "../../src/model/archive.js";
import { Store } from "../../src/store/layout.js";
import { hashTree, listAll, makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { readTar, writeTar, type TarEntry } from "../helpers/tar.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { requireTool, startRegistry, type RunningRegistry } from "../registry/harness.js";

const run = promisify(execFile);
const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

let hub: Hub;
let reg: RunningRegistry;
let tmp: string;
let model: string;
let home: string;
let pulled: string;
let archive: string;

let n = 0;
const freshHome = () => path.join(tmp, `store-${n++}`);
const env = (cakeHome: string) => ({ CAKE_HOME: cakeHome, HF_ENDPOINT: hub.url, HF_TOKEN: "" });

const models = async (cakeHome: string) => JSON.parse((await cake(["ls", "--json"], env(cakeHome))).stdout || "[]") as { ref: string; digest: string }[];

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "cake-archive-"));
  model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 128, layers: 2, vocab: 512, shards: 2 });
  [hub, reg] = await Promise.all([startHub(), startRegistry()]);
  hub.addRepo("acme/tiny-llama");
  await hub.commit("acme/tiny-llama", model);
  home = freshHome();
  const pull = await cake(["pull", "-q", "hf://acme/tiny-llama"], env(home));
  expect(pull.code).toBe(0);
  pulled = pull.stdout.trim();
  archive = path.join(tmp, "out", "model.tar");
  await fsp.mkdir(path.dirname(archive));
  const save = await cake(["save", "-q", "hf://acme/tiny-llama", archive], env(home));
  expect(save.stderr).toBe("");
  expect(save.code).toBe(0);
});
afterAll(async () => {
  await Promise.all([hub?.close(), reg?.close()]);
  await fsp.rm(tmp, { recursive: true, force: true });
});

describe("cake save", () => {
  it("writes an OCI archive of the model: the layout files and each blob once, nothing left beside it", async () => {
    expect(await fsp.readdir(path.dirname(archive))).toEqual(["model.tar"]);
    const entries = await readTar(archive);
    const names = entries.map((e) => e.header.name);
    expect(names).toContain("oci-layout");
    expect(new Set(names).size).toBe(names.length);
    const index = JSON.parse(entries.find((e) => e.header.name === "index.json")!.data.toString()) as {
      manifests: { digest: string; annotations: Record<string, string> }[];
    };
    expect(index.manifests.map((m) => [m.digest, m.annotations["dev.cake.ref"], m.annotations["org.opencontainers.image.ref.name"]])).toEqual([
      [pulled, "hf://acme/tiny-llama@main", "hf.co/acme/tiny-llama/main"],
    ]);
    const manifest = JSON.parse(entries.find((e) => e.header.name === `blobs/sha256/${pulled.slice(7)}`)!.data.toString()) as {
      config: { digest: string };
      layers: { digest: string }[];
    };
    const want = new Set([pulled, manifest.config.digest, ...manifest.layers.map((l) => l.digest)]);
    const blobs = entries.filter((e) => e.header.name.startsWith("blobs/sha256/") && e.header.type === "file");
    expect(new Set(blobs.map((b) => `sha256:${b.header.name.slice(13)}`))).toEqual(want);
    for (const b of blobs) expect(sha256(b.data)).toBe(`sha256:${b.header.name.slice(13)}`);
  });

  it("is read by skopeo: copied to a real registry, crane sees the same manifest digest", async () => {
    const target = `${reg.host}/acme/tiny-llama:main`;
    await run(requireTool("skopeo"), ["copy", "-q", "--dest-tls-verify=false", `oci-archive:${archive}`, `docker://${target}`]);
    const { stdout } = await run(requireTool("crane"), ["manifest", "--insecure", target], { encoding: "buffer" });
    expect(sha256(stdout)).toBe(pulled);

    const dir = path.join(tmp, "skopeo-oci");
    await run(requireTool("skopeo"), ["copy", "-q", `oci-archive:${archive}`, `oci:${dir}:main`]);
    const idx = JSON.parse(await fsp.readFile(path.join(dir, "index.json"), "utf8")) as { manifests: { digest: string }[] };
    expect(idx.manifests.map((m) => m.digest)).toEqual([pulled]);
  });

  it("writes nothing through a link planted at the temp name it once used (out.tmp-<pid>); a killed save's temp file goes at the next", async () => {
    const dir = path.join(tmp, "shared");
    await fsp.mkdir(dir);
    const victim = path.join(tmp, "victim.txt");
    await fsp.writeFile(victim, "precious");
    const out = path.join(dir, "m.tar");
    await fsp.symlink(victim, `${out}.tmp-${process.pid}`); // this process saves, in-process below
    const deadPid = spawnSync(process.execPath, ["-e", "0"]).pid!;
    const left = `${out}.${deadPid}-1-0123456789abcdef.tmp`;
    await fsp.writeFile(left, "a killed save's bytes");
    await saveArchive(new Store(home), ["hf://acme/tiny-llama"], out);
    expect(await fsp.readFile(victim, "utf8")).toBe("precious");
    expect((await fsp.lstat(out)).isFile()).toBe(true);
    expect(await fsp.readFile(out)).toEqual(await fsp.readFile(archive));
    expect(fs.existsSync(left)).toBe(false);
  });

  it("refuses a ref the store does not hold, and leaves no file", async () => {
    const out = path.join(tmp, "nothing.tar");
    const r = await cake(["save", "hf://acme/other", out], env(home));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cake: hf:\/\/acme\/other@main: not in the store/);
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe("cake load", () => {
  it("loads into an empty store; export rebuilds the model byte for byte", async () => {
    const empty = freshHome();
    const r = await cake(["load", "-q", archive], env(empty));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`hf://acme/tiny-llama@main ${pulled}\n`);
    expect((await models(empty)).map((m) => [m.ref, m.digest])).toEqual([["hf://acme/tiny-llama@main", pulled]]);
    const out = path.join(tmp, "exported");
    const exp = await cake(["export", "-q", "hf://acme/tiny-llama", out], env(empty));
    expect(exp.code).toBe(0);
    expect(await hashTree(out)).toEqual(await hashTree(model));
    // Again: nothing new to write.
    const again = await cake(["load", archive], env(empty));
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/0 new blobs/);
  });

  it("loads skopeo's oci-archive, index.json wherever it is, tagged by its ref.name", async () => {
    const sk = path.join(tmp, "skopeo.tar");
    await run(requireTool("skopeo"), ["copy", "-q", `oci:${home}:hf.co/acme/tiny-llama/main`, `oci-archive:${sk}:acme/tiny-llama:v1`]);
    // And one with index.json moved behind every blob.
    const entries = await readTar(archive);
    const last = path.join(tmp, "index-last.tar");
    await writeTar(last, [...entries.filter((e) => e.header.name !== "index.json"), ...entries.filter((e) => e.header.name === "index.json")]);

    const empty = freshHome();
    for (const [file, ref] of [
      [sk, "registry-1.docker.io/acme/tiny-llama:v1"],
      [last, "hf://acme/tiny-llama@main"],
    ] as const) {
      const r = await cake(["load", "-q", file], env(empty));
      expect(r.stderr, file).toBe("");
      expect(r.stdout).toBe(`${ref} ${pulled}\n`);
      const out = path.join(tmp, `export-${path.basename(file)}`);
      expect((await cake(["export", "-q", ref === "hf://acme/tiny-llama@main" ? ref : "acme/tiny-llama:v1", out], env(empty))).code).toBe(0);
      expect(await hashTree(out)).toEqual(await hashTree(model));
    }
  });

  it("refuses a corrupted archive by the digest of the damaged blob; nothing is stored under it, nothing tagged", async () => {
    const entries = await readTar(archive);
    const victim = entries.filter((e) => e.header.name.startsWith("blobs/sha256/") && e.header.type === "file").sort((a, b) => b.data.length - a.data.length)[0]!;
    const hex = victim.header.name.slice(13);
    victim.data[Math.floor(victim.data.length / 2)]! ^= 0x01;
    const bad = path.join(tmp, "corrupted.tar");
    await writeTar(bad, entries);

    const empty = freshHome();
    const r = await cake(["load", bad], env(empty));
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`^cake: .*blobs/sha256/${hex}: content hashes to sha256:[a-f0-9]{64}, not sha256:${hex}\\n$`));
    expect(fs.existsSync(path.join(empty, "blobs", "sha256", hex))).toBe(false);
    expect((await listAll(path.join(empty, "blobs"))).some((f) => f.endsWith(hex))).toBe(false);
    expect(await models(empty)).toEqual([]);
  });

  it("names a blob the archive lacks and tags nothing", async () => {
    const entries = await readTar(archive);
    const index = JSON.parse(entries.find((e) => e.header.name === "index.json")!.data.toString()) as { manifests: { digest: string }[] };
    const manifest = JSON.parse(entries.find((e) => e.header.name === `blobs/sha256/${index.manifests[0]!.digest.slice(7)}`)!.data.toString()) as {
      layers: { digest: string }[];
    };
    const missing = manifest.layers[0]!.digest;
    const partial = path.join(tmp, "missing.tar");
    await writeTar(partial, entries.filter((e) => e.header.name !== `blobs/sha256/${missing.slice(7)}`));
    const empty = freshHome();
    const r = await cake(["load", partial], env(empty));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^cake: .*needs blob ${missing}.*neither in the archive nor in the store\\n$`));
    expect(await models(empty)).toEqual([]);
  });

  it("never writes entries with other names, wherever they point", async () => {
    const tag = `evil-${randomBytes(6).toString("hex")}`;
    const base = path.join(tmp, "hostile");
    const store = path.join(base, "a", "b", "store");
    const entries = await readTar(archive);
    const file = (name: string): TarEntry => ({ header: { name, type: "file", mode: 0o644, mtime: new Date(0) }, data: Buffer.from("pwned\n") });
    const hostile: TarEntry[] = [
      file(`../../${tag}`),
      file(`../../../${tag}`),
      file(`blobs/sha256/../../../${tag}`),
      file(`${base}/${tag}`),
      file(`blobs/${tag}`),
      { header: { name: `blobs/sha256/${"0".repeat(64)}`, type: "symlink", linkname: `../../${tag}`, mode: 0o777, mtime: new Date(0) }, data: Buffer.alloc(0) },
    ];
    const evil = path.join(tmp, "hostile.tar");
    await writeTar(evil, [...hostile, ...entries]);

    const r = await cake(["load", "-q", evil], env(store));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    for (const dir of [store, path.join(store, "blobs"), path.join(store, "blobs", "sha256"), path.dirname(evil), process.cwd(), base]) {
      for (const up of ["", "..", "../..", "../../.."]) expect(fs.existsSync(path.resolve(dir, up, tag)), path.resolve(dir, up, tag)).toBe(false);
    }
    expect((await listAll(tmp)).filter((f) => f.includes(tag))).toEqual([]);
    expect(fs.existsSync(path.join(store, "blobs", "sha256", "0".repeat(64)))).toBe(false);
    expect((await models(store)).map((m) => m.ref)).toEqual(["hf://acme/tiny-llama@main"]);
  });

  it("refuses an index.json over 4 MiB", async () => {
    const entries = await readTar(archive);
    const index = entries.find((e) => e.header.name === "index.json")!;
    index.data = Buffer.concat([index.data, Buffer.alloc((4 << 20) + 1 - index.data.length, " ")]);
    const big = path.join(tmp, "big-index.tar");
    await writeTar(big, entries);
    const empty = freshHome();
    const r = await cake(["load", big], env(empty));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cake: .*index\.json is 4194305 bytes, more than the 4194304 allowed\n$/);
    expect(await models(empty)).toEqual([]);
  });
});
