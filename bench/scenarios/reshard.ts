/**
 * Scenario 3, the same fine-tune resharded (one more shard, new boundaries, new index) after the
 * fine-tune: no tensor changed, every safetensors file did. From a registry cake should move ~0 tensor
 * bytes (its blobs are tensors, not files). The Hub row shows what a file-addressed source costs.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { startHub } from "../../test/hub/emulator.js";
import { startCountingProxy } from "../../test/registry/counting-proxy.js";
import { startRegistry } from "../../test/registry/harness.js";
import { cakeEnv, type Models, type Options } from "../lib/context.js";
import { repoBytes } from "../lib/models.js";
import { checkRegistry, ensureCrane, ensureOras } from "../lib/peers.js";
import { cake, medianOf, Scratch, timed } from "../lib/proc.js";
import { getManifest, pushDir, secondPull, tensorBytesOf } from "../lib/registry.js";
import { mb, secs, type Section } from "../lib/report.js";

export async function reshardScenario(models: Models, opts: Options): Promise<Section> {
  const oras = await ensureOras();
  const crane = await ensureCrane();
  checkRegistry();
  const ft = await models.fineTune();
  const rs = await models.resharded();
  const rsBytes = await repoBytes(rs);
  const scratch = new Scratch();
  const rows: (string | number)[][] = [];
  try {
    const reg = await startRegistry();
    scratch.defer(() => reg.close());
    const proxy = await startCountingProxy(reg.url);
    scratch.defer(() => proxy.close());
    const setup = await scratch.dir("rs-push");
    await pushDir(ft.dir, `${reg.host}/bench/ft:v1`, setup);
    await pushDir(rs, `${reg.host}/bench/ft-resharded:v1`, setup);
    const rsManifest = await getManifest(reg.url, "bench/ft-resharded", "v1");
    const ftRef = `${proxy.host}/bench/ft:v1`;
    const rsRef = `${proxy.host}/bench/ft-resharded:v1`;
    const regCase = async (name: string, first: (d: string) => Promise<unknown>, second: (d: string) => Promise<{ secs: number }>) => {
      const m = await secondPull(opts.runs, scratch, "rs-reg", proxy, rsManifest, first, second);
      rows.push(["registry", name, mb(m.bytes), mb(m.tensor), secs(m.secs)]);
      return m;
    };
    const cakeReg = await regCase(
      "cake pull ft, then ft-resharded",
      (d) => cake(["pull", "-q", ftRef], cakeEnv(undefined, d)),
      (d) => cake(["pull", "-q", rsRef], cakeEnv(undefined, d)),
    );
    await regCase(
      "oras pull ft, then ft-resharded (ORAS_CACHE)",
      (d) => timed(oras, ["pull", "--plain-http", "--no-tty", "-o", path.join(d, "a"), ftRef], { env: { ...process.env, ORAS_CACHE: path.join(d, "cache") } }),
      (d) => timed(oras, ["pull", "--plain-http", "--no-tty", "-o", path.join(d, "b"), rsRef], { env: { ...process.env, ORAS_CACHE: path.join(d, "cache") } }),
    );
    await regCase(
      "crane pull ft, then ft-resharded (same OCI layout)",
      (d) => timed(crane, ["pull", "--insecure", "--format", "oci", ftRef, path.join(d, "layout")]),
      (d) => timed(crane, ["pull", "--insecure", "--format", "oci", rsRef, path.join(d, "layout")]),
    );

    // The Hub: every shard has a new sha256, so every shard moves again.
    const hub = await startHub();
    scratch.defer(() => hub.close());
    await hub.commit("bench/ft", ft.dir);
    await hub.commit("bench/ft-resharded", rs);
    const h = await medianOf(opts.runs, async () => {
      const d = await scratch.dir("rs-hub");
      await cake(["pull", "-q", "hf://bench/ft"], cakeEnv(hub, d));
      hub.counters.reset();
      const t = await cake(["pull", "-q", "hf://bench/ft-resharded"], cakeEnv(hub, d));
      const bytes = hub.counters.bytesServed;
      await fs.rm(d, { recursive: true, force: true });
      return { secs: t.secs, bytes };
    });
    rows.push(["Hub (loopback)", "cake pull hf://ft, then hf://ft-resharded", mb(h.bytes), "(whole files)", secs(h.secs)]);

    return {
      name: "reshard",
      title: "3. Resharded fine-tune after the fine-tune",
      setup: [
        `the fine-tune of scenario 2 (${mb(rsBytes)} MB) rewritten from ${opts.shards} into ${opts.shards + 1} shards: same tensors, new files, new index; its manifest holds ${mb(tensorBytesOf(rsManifest))} MB of tensor layers`,
        `registry: CNCF distribution on loopback behind the counting proxy (bytes = blob GET bodies); median of ${opts.runs} runs from an empty store`,
      ],
      header: ["source", "client", "MB moved", "of which tensor blobs, MB", "seconds"],
      rows,
      targets: [{ what: "resharded fine-tune from a registry moves ~0 tensor bytes", measured: `${mb(cakeReg.tensor)} MB of tensor blobs (${mb(cakeReg.bytes)} MB in all)`, met: cakeReg.tensor <= 0.001 * tensorBytesOf(rsManifest) }],
      notes: [
        "What cake still moves from the registry is the new config and recipe (headers and tensor maps of the new files) and small pack blobs whose run of small tensors was cut differently by the new shard boundaries.",
      ],
    };
  } finally {
    await scratch.cleanup();
  }
}
