/**
 * Scenario 1, cold pull. From the Hub emulation, capped (per-connection bandwidth and latency, like the
 * public CDN) and uncapped (loopback): `cake pull hf://` against huggingface_hub's snapshot_download, and
 * against the ceiling (a client that discards the bytes, same request pattern). From CNCF distribution
 * on loopback: `cake pull` against `oras pull` (default concurrency and 16) and `crane pull`.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { startHub, type Hub } from "../../test/hub/emulator.js";
import { startRegistry } from "../../test/registry/harness.js";
import { cakeEnv, hfEnv, hfSnapshotArgs, HF_WORKERS, type Models, type Options } from "../lib/context.js";
import { ensureCrane, ensureHfHub, ensureOras, checkRegistry } from "../lib/peers.js";
import { cake, median, medianOf, ROOT, run, Scratch, timed } from "../lib/proc.js";
import { mb, mbs, mib, pct, secs, type Section } from "../lib/report.js";

const REPO = "bench/model";
const CAKE_CONCURRENCY = 16;
const CHUNK = 16 << 20;

/** Median rate (bytes/s) a do-nothing client gets from the Hub emulation, N streams of 16 MiB ranges. */
export async function drainRate(hub: Hub, repo: string, dir: string, concurrency: number, runs: number): Promise<number> {
  const files = [];
  for (const f of (await fs.readdir(dir)).sort()) {
    files.push({ url: `${hub.url}/${repo}/resolve/main/${f}`, size: (await fs.stat(path.join(dir, f))).size });
  }
  const job = JSON.stringify({ files, concurrency, chunk: CHUNK });
  const rates: number[] = [];
  for (let i = 0; i < runs; i++) {
    const r = await run(process.execPath, [path.join(ROOT, "dist", "bench", "drain.js"), job]);
    const m = /^(\d+) ([\d.]+)/.exec(r.stdout);
    if (r.code !== 0 || !m) throw new Error(`drain failed: ${r.stderr}`);
    rates.push(Number(m[1]) / Number(m[2]));
  }
  return median(rates);
}

export async function cold(models: Models, opts: Options): Promise<Section> {
  const python = await ensureHfHub();
  const oras = await ensureOras();
  const crane = await ensureCrane();
  checkRegistry();
  const model = await models.base();
  const scratch = new Scratch();
  const rows: (string | number)[][] = [];
  const targets: Section["targets"] = [];
  const notes: string[] = [];
  try {
    const hub = await startHub();
    scratch.defer(() => hub.close());
    hub.addRepo(REPO);
    await hub.commit(REPO, model.dir);

    const cap = opts.bandwidth * 1e6;
    const networks = [
      { name: `capped ${opts.bandwidth} MB/s/conn, ${opts.latencyMs} ms`, bandwidth: cap, latencyMs: opts.latencyMs },
      { name: "loopback, uncapped", bandwidth: 0, latencyMs: 0 },
    ];
    for (const net of networks) {
      hub.setKnobs({ bandwidth: net.bandwidth, latencyMs: net.latencyMs });
      const ceiling = await drainRate(hub, REPO, model.dir, CAKE_CONCURRENCY, opts.runs);
      const capFor = (conc: number) => (net.bandwidth ? net.bandwidth * conc : ceiling);
      const capLabel = (conc: number) => (net.bandwidth ? `${mbs(capFor(conc), 1)} (${opts.bandwidth} × ${conc})` : `${mbs(ceiling, 1)} (ceiling)`);
      rows.push([net.name, "ceiling: discard client, 16 × 16 MiB ranges", CAKE_CONCURRENCY, secs(model.bytes / ceiling), mbs(ceiling, 1), capLabel(CAKE_CONCURRENCY), pct(ceiling / capFor(CAKE_CONCURRENCY)), "–", "–", ""]);

      const hubClients = [
        { name: "cake pull hf://", conc: CAKE_CONCURRENCY, once: (d: string) => cake(["pull", "-q", `hf://${REPO}`], cakeEnv(hub, d)) },
        { name: "cake pull hf:// --concurrency 4", conc: 4, once: (d: string) => cake(["pull", "-q", "-c", "4", `hf://${REPO}`], cakeEnv(hub, d)) },
        { name: "huggingface_hub snapshot_download", conc: HF_WORKERS, once: (d: string) => timed(python, hfSnapshotArgs(REPO), { env: hfEnv(hub, d) }) },
      ];
      const measured = [];
      for (const cl of hubClients) {
        const m = await medianOf(opts.runs, async () => {
          const dir = await scratch.dir("cold-hub");
          const t = await cl.once(dir);
          await fs.rm(dir, { recursive: true, force: true });
          return { secs: t.secs, rss: t.rssMiB, cpu: t.cpu };
        });
        measured.push({ ...cl, ...m });
      }
      const hf = measured[measured.length - 1]!;
      for (const m of measured) {
        const rate = model.bytes / m.secs;
        rows.push([net.name, m.name, m.conc, secs(m.secs), mbs(model.bytes, m.secs), capLabel(m.conc), pct(rate / capFor(m.conc)), m.cpu.toFixed(1), mib(m.rss), m === hf ? "1.00x" : `${(hf.secs / m.secs).toFixed(2)}x faster`]);
      }
      const c = measured[0]!;
      const cakeRate = model.bytes / c.secs;
      if (net.bandwidth) {
        targets.push({ what: "cold pull, capped: >= 90 % of link capacity (cap × 16 connections)", measured: `${pct(cakeRate / capFor(CAKE_CONCURRENCY))} (${pct(cakeRate / ceiling)} of the ceiling)`, met: cakeRate >= 0.9 * capFor(CAKE_CONCURRENCY) });
        targets.push({ what: "cold pull, capped: >= 3x huggingface_hub", measured: `${(hf.secs / c.secs).toFixed(2)}x`, met: hf.secs / c.secs >= 3 });
      }
    }

    // From a registry (distribution on loopback, uncapped): cake against oras and crane.
    const reg = await startRegistry();
    scratch.defer(() => reg.close());
    const ref = `${reg.host}/bench/model:v1`;
    const pushStore = await scratch.dir("cold-push");
    await cake(["push", "-q", model.dir, ref], cakeEnv(undefined, pushStore));
    const clients: { name: string; conc: number | string; once: (dir: string) => Promise<{ secs: number; rssMiB: number; cpu: number }> }[] = [
      { name: "cake pull (registry)", conc: CAKE_CONCURRENCY, once: (dir) => cake(["pull", "-q", ref], cakeEnv(undefined, dir)) },
      { name: "oras pull", conc: 3, once: (dir) => timed(oras, ["pull", "--plain-http", "--no-tty", "-o", dir, ref]) },
      { name: "oras pull --concurrency 16", conc: 16, once: (dir) => timed(oras, ["pull", "--plain-http", "--no-tty", "--concurrency", "16", "-o", dir, ref]) },
      { name: "crane pull --format oci", conc: 4, once: (dir) => timed(crane, ["pull", "--insecure", "--format", "oci", ref, dir]) },
    ];
    const regRows: { name: string; conc: number | string; secs: number; rss: number; cpu: number }[] = [];
    for (const cl of clients) {
      const m = await medianOf(opts.runs, async () => {
        const dir = await scratch.dir("cold-reg");
        const t = await cl.once(path.join(dir, "out"));
        await fs.rm(dir, { recursive: true, force: true });
        return { secs: t.secs, rss: t.rssMiB, cpu: t.cpu };
      });
      regRows.push({ name: cl.name, conc: cl.conc, secs: m.secs, rss: m.rss, cpu: m.cpu });
    }
    const best = Math.min(...regRows.slice(1).map((r) => r.secs));
    for (const r of regRows) {
      rows.push(["distribution, loopback", r.name, r.conc, secs(r.secs), mbs(model.bytes, r.secs), "–", "–", r.cpu.toFixed(1), mib(r.rss), r === regRows[0] ? `${(best / r.secs).toFixed(2)}x the fastest peer` : ""]);
    }
    notes.push(
      "Capacity: the emulation allows any number of connections, each capped, so a client's link capacity is the cap × its own concurrency " +
        `(cake ${CAKE_CONCURRENCY}, snapshot_download ${HF_WORKERS} workers; it opens one stream per file, so with ${model.shards} shards it can use only ${model.shards}). ` +
        "Uncapped, the capacity is the ceiling: a client that discards the bytes, with cake's request pattern, against the same server (it measures the emulation + loopback + 2 cores, not a network).",
      "The Hub emulation and the counting proxy run in the bench's own node process; every client is a child process. All on 2 cores: server and client compete for CPU, so uncapped figures are CPU-bound.",
      "oras's default concurrency is 3 and crane's 4 (go-containerregistry's default jobs). CPU s = user + system seconds of the client process (/usr/bin/time), the cost per byte that decides the rate when 2 cores are shared with the server.",
    );
    return {
      name: "cold",
      title: "1. Cold pull",
      setup: [
        `model: Llama-shaped ${model.shape.hidden}×${model.shape.layers} layers, ${model.tensors} BF16 tensors in ${model.shards} shards + index + tokenizer/config files, ${mb(model.bytes)} MB`,
        `median of ${opts.runs} runs, each into an empty store / cache / directory`,
      ],
      header: ["network", "client", "streams", "seconds", "MB/s", "capacity MB/s", "of capacity", "CPU s", "max RSS", "vs peer"],
      rows,
      targets,
      notes,
    };
  } finally {
    await scratch.cleanup();
  }
}
