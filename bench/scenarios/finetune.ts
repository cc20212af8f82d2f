/**
 * Scenario 2, a fine-tune after its base: the top N decoder layers changed, everything else identical.
 * Bytes moved and wall time for the second pull.
 *
 * From the Hub (capped network): the Hub names files, not tensors, so cake can skip only files whose
 * sha256 it already holds and must fetch every changed shard whole; huggingface_hub caches per repo
 * and fetches everything again. From a registry (distribution behind a counting proxy): cake fetches
 * only the blobs it lacks; oras pull (into a new directory, and with its ORAS_CACHE blob cache) and
 * crane (into the same OCI layout) for comparison.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { startHub } from "../../test/hub/emulator.js";
import { hashTree } from "../../test/fixtures/models.js";
import { startCountingProxy } from "../../test/registry/counting-proxy.js";
import { startRegistry } from "../../test/registry/harness.js";
import { cakeEnv, hfEnv, hfSnapshotArgs, type Models, type Options } from "../lib/context.js";
import { checkRegistry, ensureCrane, ensureHfHub, ensureOras } from "../lib/peers.js";
import { cake, medianOf, Scratch, timed } from "../lib/proc.js";
import { getManifest, pushDir, secondPull, tensorBytesOf } from "../lib/registry.js";
import { mb, pct, secs, type Section } from "../lib/report.js";

/** Bytes of the files of `b` whose content differs from the same path in `a` (or is new). */
export async function changedFileBytes(a: string, b: string): Promise<number> {
  const [ha, hb] = await Promise.all([hashTree(a), hashTree(b)]);
  let n = 0;
  for (const [f, h] of hb) if (ha.get(f) !== h) n += (await fs.stat(path.join(b, f))).size;
  return n;
}

export async function fineTune(models: Models, opts: Options): Promise<Section> {
  const python = await ensureHfHub();
  const oras = await ensureOras();
  const crane = await ensureCrane();
  checkRegistry();
  const base = await models.base();
  const ft = await models.fineTune();
  const changedFiles = await changedFileBytes(base.dir, ft.dir);
  const scratch = new Scratch();
  const rows: (string | number)[][] = [];
  try {
    // --- from the Hub (capped) ---
    const hub = await startHub({ bandwidth: opts.bandwidth * 1e6, latencyMs: opts.latencyMs });
    scratch.defer(() => hub.close());
    await hub.commit("bench/base", base.dir);
    await hub.commit("bench/ft", ft.dir);
    const hubCase = async (name: string, first: (d: string) => Promise<unknown>, second: (d: string) => Promise<{ secs: number }>) => {
      const m = await medianOf(opts.runs, async () => {
        const d = await scratch.dir("ft-hub");
        await first(d);
        hub.counters.reset();
        const t = await second(d);
        const bytes = hub.counters.bytesServed;
        await fs.rm(d, { recursive: true, force: true });
        return { secs: t.secs, bytes };
      });
      rows.push(["Hub (capped)", name, mb(m.bytes), pct(m.bytes / ft.changedBytes), secs(m.secs)]);
      return m;
    };
    const cakeHub = await hubCase(
      "cake pull hf://base, then hf://ft",
      (d) => cake(["pull", "-q", "hf://bench/base"], cakeEnv(hub, d)),
      (d) => cake(["pull", "-q", "hf://bench/ft"], cakeEnv(hub, d)),
    );
    await hubCase(
      "snapshot_download base, then ft",
      (d) => timed(python, hfSnapshotArgs("bench/base"), { env: hfEnv(hub, d) }),
      (d) => timed(python, hfSnapshotArgs("bench/ft"), { env: hfEnv(hub, d) }),
    );

    // --- from a registry, through a counting proxy ---
    const reg = await startRegistry();
    scratch.defer(() => reg.close());
    const proxy = await startCountingProxy(reg.url);
    scratch.defer(() => proxy.close());
    const setup = await scratch.dir("ft-push");
    await pushDir(base.dir, `${reg.host}/bench/base:v1`, setup);
    await pushDir(ft.dir, `${reg.host}/bench/ft:v1`, setup);
    const ftManifest = await getManifest(reg.url, "bench/ft", "v1");
    const baseRef = `${proxy.host}/bench/base:v1`;
    const ftRef = `${proxy.host}/bench/ft:v1`;
    const regCase = async (name: string, first: (d: string) => Promise<unknown>, second: (d: string) => Promise<{ secs: number }>) => {
      const m = await secondPull(opts.runs, scratch, "ft-reg", proxy, ftManifest, first, second);
      rows.push(["registry", name, mb(m.bytes), pct(m.bytes / ft.changedBytes), secs(m.secs)]);
      return m;
    };
    const orasPull = (ref: string, out: string, cache?: string) =>
      timed(oras, ["pull", "--plain-http", "--no-tty", "-o", out, ref], cache ? { env: { ...process.env, ORAS_CACHE: cache } } : {});
    const cakeReg = await regCase(
      "cake pull base, then ft",
      (d) => cake(["pull", "-q", baseRef], cakeEnv(undefined, d)),
      (d) => cake(["pull", "-q", ftRef], cakeEnv(undefined, d)),
    );
    await regCase(
      "oras pull base, then ft (new directory)",
      (d) => orasPull(baseRef, path.join(d, "base")),
      (d) => orasPull(ftRef, path.join(d, "ft")),
    );
    await regCase(
      "oras pull base, then ft (ORAS_CACHE)",
      (d) => orasPull(baseRef, path.join(d, "base"), path.join(d, "cache")),
      (d) => orasPull(ftRef, path.join(d, "ft"), path.join(d, "cache")),
    );
    await regCase(
      "crane pull base, then ft (same OCI layout)",
      (d) => timed(crane, ["pull", "--insecure", "--format", "oci", baseRef, path.join(d, "layout")]),
      (d) => timed(crane, ["pull", "--insecure", "--format", "oci", ftRef, path.join(d, "layout")]),
    );

    const limit = ft.changedBytes * 1.01;
    return {
      name: "finetune",
      title: "2. Fine-tune after base",
      setup: [
        `base: ${mb(base.bytes)} MB Llama-shaped (${base.shape.hidden}×${base.shape.layers}, ${base.shards} shards); fine-tune: every tensor of the top ${opts.ftLayers} layers changed (${ft.changedTensors} tensors, ${mb(ft.changedBytes)} MB); files whose bytes differ: ${mb(changedFiles)} MB`,
        `Hub: capped ${opts.bandwidth} MB/s per connection, ${opts.latencyMs} ms; base and fine-tune are two repos. Registry: CNCF distribution on loopback behind the counting proxy (bytes = blob GET bodies)`,
        `median of ${opts.runs} runs; each run starts from an empty store / cache, pulls the base (not counted), then the fine-tune (counted)`,
      ],
      header: ["source", "client", "MB moved for the fine-tune", "of changed tensor bytes", "seconds"],
      rows,
      targets: [
        {
          what: "fine-tune pull from a registry moves <= changed tensor bytes + 1 %",
          measured: `${mb(cakeReg.bytes)} MB (${mb(cakeReg.tensor)} MB of it tensor blobs) for ${mb(ft.changedBytes)} MB changed`,
          met: cakeReg.bytes <= limit,
        },
      ],
      notes: [
        `From the Hub cake moved ${mb(cakeHub.bytes)} MB: the Hub only publishes a sha256 per file, so a changed shard is fetched whole (unchanged shards and files are skipped because cake remembers which blobs hold which byte ranges of a file sha256). The floor for any Hub client is the changed files: ${mb(changedFiles)} MB.`,
        `The fine-tune's manifest has ${mb(tensorBytesOf(ftManifest))} MB of tensor layers; the rest of what moves is its config and recipe blobs (new headers, new tensor digests).`,
      ],
    };
  } finally {
    await scratch.cleanup();
  }
}
