/**
 * The store is an OCI image layout other tools read (image-layout.md): after `cake pull`, skopeo
 * (`oci:$CAKE_HOME:<name>`) and oras (`--from-oci-layout $CAKE_HOME:<name>`) find the model by the
 * `org.opencontainers.image.ref.name` cake wrote, and copy it without changing a byte. Every ref cake
 * can hold gets a name both tools accept, and no two refs share one (store.tag replaces an entry
 * with the same name, so a shared name would silently drop another model's tag).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ociRefName } from "../../src/model/ref.js";
import { Store } from "../../src/store/layout.js";
import { makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { requireTool, startRegistry, type RunningRegistry } from "../registry/harness.js";

const run = promisify(execFile);
const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

let hub: Hub;
let reg: RunningRegistry;
let tmp: string;
let home: string;
let pulled: string;
let commit: string;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-interop-"));
  await makeLlamaLike(path.join(tmp, "model"), { hidden: 128, layers: 2, vocab: 512, shards: 2 });
  [hub, reg] = await Promise.all([startHub(), startRegistry()]);
  hub.addRepo("acme/tiny-llama");
  commit = await hub.commit("acme/tiny-llama", path.join(tmp, "model"));
  home = path.join(tmp, "store");
  const pull = await cake(["pull", "-q", "hf://acme/tiny-llama"], { CAKE_HOME: home, HF_ENDPOINT: hub.url, HF_TOKEN: "" });
  expect(pull.stderr).toBe("");
  expect(pull.code).toBe(0);
  pulled = pull.stdout.trim();
});
afterAll(async () => {
  await Promise.all([hub?.close(), reg?.close()]);
  await fs.rm(tmp, { recursive: true, force: true });
});

/** The ref.name the store's index.json gives cake's `ref`. */
async function refNameIn(storeDir: string, ref: string): Promise<string> {
  const idx = JSON.parse(await fs.readFile(path.join(storeDir, "index.json"), "utf8")) as { manifests: { annotations: Record<string, string> }[] };
  const entry = idx.manifests.find((m) => m.annotations["dev.cake.ref"] === ref);
  expect(entry, `${ref} in ${storeDir}/index.json`).toBeDefined();
  return entry!.annotations["org.opencontainers.image.ref.name"]!;
}

describe("the store as an OCI image layout", () => {
  it("skopeo copies a pulled model out of $CAKE_HOME by its ref.name, digest unchanged", async () => {
    const name = await refNameIn(home, "hf://acme/tiny-llama@main");
    expect(name).toBe("hf.co/acme/tiny-llama/main"); // the name README tells users to type
    const out = path.join(tmp, "skopeo-copy");
    await run(requireTool("skopeo"), ["copy", "-q", `oci:${home}:${name}`, `oci:${out}:main`]);
    const idx = JSON.parse(await fs.readFile(path.join(out, "index.json"), "utf8")) as { manifests: { digest: string }[] };
    expect(idx.manifests.map((m) => m.digest)).toEqual([pulled]);
    // The copy is complete: skopeo wrote every blob the manifest names.
    const manifest = JSON.parse(await fs.readFile(path.join(out, "blobs", "sha256", pulled.slice(7)), "utf8")) as { config: { digest: string }; layers: { digest: string }[] };
    for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
      expect(sha256(await fs.readFile(path.join(out, "blobs", "sha256", d.slice(7))))).toBe(d);
    }
  });

  it("oras copies it from the layout to a real registry; the registry serves the same manifest bytes", async () => {
    const oras = requireTool("oras");
    for (const [ref, tag] of [
      ["hf://acme/tiny-llama@main", "main"],
      [`hf://acme/tiny-llama@${commit}`, commit.slice(0, 12)],
    ] as const) {
      const name = await refNameIn(home, ref);
      const target = `${reg.host}/acme/tiny-llama:${tag}`;
      await run(oras, ["copy", "--from-oci-layout", `${home}:${name}`, "--to-plain-http", target]);
      const { stdout } = await run(oras, ["manifest", "fetch", "--plain-http", target], { encoding: "buffer" });
      expect(sha256(stdout)).toBe(pulled);
    }
  });

  it("gives every ref a ref.name of its own that both skopeo and oras accept", async () => {
    const refs = [
      "hf://acme/tiny-llama@main",
      `hf://acme/tiny-llama@${commit}`,
      "hf://acme/tiny-llama@feature/x",
      "hf://acme/tiny-llama@v1.0+build",
      "hf://acme/tiny-llama@v1.0_build",
      "hf://acme/tiny-llama@_draft",
      "hf://acme/my__model@main",
      "hf://gpt2@main",
      "hf://gpt2@feature/main",
      "hf://gpt2/feature@main",
      "127.0.0.1:5000/acme/m:v1",
      "127.0.0.1/5000/acme/m/v1",
      `127.0.0.1:5000/acme/m@${pulled}`,
      "hf.co/acme/tiny-llama/main",
    ];
    const names = refs.map(ociRefName);
    // Readable where it can be: what users type.
    expect(names.slice(0, 3)).toEqual(["hf.co/acme/tiny-llama/main", `hf.co/acme/tiny-llama/${commit}`, "hf.co/acme/tiny-llama/feature/x"]);
    expect(ociRefName("hf://gpt2@main")).toBe("hf.co/gpt2/main");
    // One name per ref, deterministic, and none that oras would split (':' is its path separator, '@' its digest).
    expect(new Set(names).size).toBe(refs.length);
    expect(refs.map(ociRefName)).toEqual(names);
    for (const n of names) expect(n).not.toMatch(/[:@]/);

    // The real tools read each name from a layout holding all of them.
    const dir = path.join(tmp, "names");
    await fs.cp(home, dir, { recursive: true });
    const store = new Store(dir);
    const desc = (await store.resolve("hf://acme/tiny-llama@main"))!;
    for (const ref of refs) await store.tag(ref, ociRefName(ref), desc);
    expect((await store.tags()).map((t) => t.ref).sort()).toEqual([...refs].sort());
    const manifestBytes = await store.readBlob(pulled);
    const skopeo = requireTool("skopeo");
    const oras = requireTool("oras");
    const results = await Promise.all(
      names.map(async (name, i) => {
        const failures: string[] = [];
        await run(skopeo, ["copy", "-q", `oci:${dir}:${name}`, `oci:${path.join(tmp, `names-copy-${i}`)}:t`]).catch((e: Error) => failures.push(`skopeo: ${e.message}`));
        const fetched = await run(oras, ["manifest", "fetch", "--oci-layout", `${dir}:${name}`], { encoding: "buffer" }).catch((e: Error) => {
          failures.push(`oras: ${e.message}`);
          return undefined;
        });
        if (fetched && !fetched.stdout.equals(manifestBytes)) failures.push("oras: other bytes");
        return failures.length ? `${refs[i]} -> ${name}: ${failures.join("; ")}` : "";
      }),
    );
    expect(results.filter(Boolean)).toEqual([]);
  });
});
