/**
 * Scenario 23, scale-out: `cake pull` clients through haproxy (round-robin) to 3 `cake proxy` replicas
 * sharing a backend — CNCF distribution storing into an S3 bucket (moto) — the topology of
 * test/proxy/topology.ts and docs/deploy.md, on loopback.
 *
 * - cold: 8 clients at once, each pulling 4 models (rotated order), replicas and backend empty: the
 *   Hub's file bytes against the 4 models' bytes (each revision converted once across replicas);
 * - warm: 8 clients again, fresh client stores and fresh replicas (everything from the backend):
 *   the Hub's file bytes (0 wanted);
 * - first-manifest latency: a fifth model's manifest asked through the balancer, against the
 *   conversion time the converting replica logs;
 * - warm throughput: 8 clients x 4 models through the balancer over 3 warm replicas, against the same
 *   clients pulling straight from one warm replica.
 */
import fs from "node:fs/promises";
import { startHub } from "../../test/hub/emulator.js";
import { startHaproxy, startReplicas, startS3Registry, type Replicas } from "../../test/proxy/topology.js";
import { cakeEnv, type Models, type Options } from "../lib/context.js";
import { makeModelOfShape, shapeForSize, type BenchModel } from "../lib/models.js";
import { cake, Scratch } from "../lib/proc.js";
import { mb, mbs, pct, secs, type Section } from "../lib/report.js";

const CLIENTS = 8;
/** A small Llama (hidden 512, 4 layers, a 6000-token vocabulary): about 36 MB, 2 shards. */
const SHAPE = { ...shapeForSize(1), vocab: 6000 };
const MANIFEST = "application/vnd.oci.image.manifest.v1+json";

export async function scaleOut(models: Models, opts: Options): Promise<Section> {
  const scratch = new Scratch();
  try {
    const made: BenchModel[] = [];
    for (let i = 0; i < 5; i++) made.push(await makeModelOfShape(await models.pathOf(`scaleout-${i}`), SHAPE, 2, `scaleout-${i}`));
    const repos = made.map((_, i) => `bench/scale-${i}`);
    const hub = await startHub({ bandwidth: opts.bandwidth * 1e6, latencyMs: opts.latencyMs });
    scratch.defer(() => hub.close());
    for (const [i, m] of made.entries()) await hub.commit(repos[i]!, m.dir);
    const pulled = repos.slice(0, 4);
    const pulledBytes = made.slice(0, 4).reduce((n, m) => n + m.bytes, 0);

    const backend = await startS3Registry();
    scratch.defer(() => backend.close());
    let topologies = 0;
    const topology = async () => {
      const storeRoot = await scratch.dir(`scaleout-stores-${topologies++}`);
      const reps = await startReplicas(3, { hub: hub.url, backend: `${backend.host}/cache`, storeRoot, env: { CAKE_HOME: storeRoot } });
      scratch.defer(() => reps.close());
      const lb = await startHaproxy(reps.replicas.map((r) => r.host));
      scratch.defer(() => lb.close());
      return { reps, lb };
    };
    /** CLIENTS clients at once, each pulling every model of `repos` from `host` into a fresh store; seconds. */
    const clients = async (host: string) => {
      const homes = await Promise.all(Array.from({ length: CLIENTS }, () => scratch.dir("scaleout-client")));
      const t0 = performance.now();
      await Promise.all(
        homes.map(async (home, c) => {
          for (let k = 0; k < pulled.length; k++) {
            const repo = pulled[(c + k) % pulled.length]!;
            await cake(["pull", "-q", `${host}/hf/${repo}:main`], cakeEnv(undefined, home)); // rejects on failure
          }
        }),
      );
      const s = (performance.now() - t0) / 1000;
      await Promise.all(homes.map((h) => fs.rm(h, { recursive: true, force: true })));
      return s;
    };

    // Cold: empty replicas, empty backend.
    const first = await topology();
    hub.counters.reset();
    const coldSecs = await clients(first.lb.host);
    const coldHub = hub.counters.bytesServed;

    // First-manifest latency: a model no replica has seen, asked through the balancer.
    const t0 = performance.now();
    const res = await fetch(`http://${first.lb.host}/v2/hf/${repos[4]}/manifests/main`, { headers: { accept: MANIFEST } });
    await res.arrayBuffer();
    const manifestSecs = (performance.now() - t0) / 1000;
    if (res.status !== 200) throw new Error(`first manifest of ${repos[4]}: HTTP ${res.status}`);
    const conversionSecs = convertSeconds(first.reps, repos[4]!);

    // Warm: fresh replicas (empty stores) over the warm backend; fresh clients.
    const second = await topology();
    hub.counters.reset();
    const warmSecs = await clients(second.lb.host);
    const warmHub = hub.counters.bytesServed;

    // Warm throughput: the balancer over 3 warm replicas against one warm replica straight.
    const warmed = await clients(second.lb.host); // every replica now holds what it serves
    const one = second.reps.replicas[0]!.host;
    await clients(one); // and replica 0 everything
    const direct = await clients(one);
    const balanced = await clients(second.lb.host);
    const logical = pulledBytes * CLIENTS;

    const ratioHub = coldHub / pulledBytes;
    const overhead = manifestSecs - conversionSecs;
    const throughput = direct / balanced;
    return {
      name: "scaleout",
      title: "23. Scale-out: 3 replicas behind haproxy over distribution on S3",
      setup: [
        `4 models of ${mb(pulledBytes / 4)} MB (2 shards each) pulled by ${CLIENTS} clients at once, each pulling all 4 (${mb(logical)} MB in all); a fifth for the first-manifest latency`,
        `haproxy 2.6 round-robin over 3 \`cake proxy\` replicas (processes), backend: CNCF distribution with the s3 driver on moto; Hub emulation capped at ${opts.bandwidth} MB/s per connection, ${opts.latencyMs} ms latency; all on loopback, one run each`,
      ],
      header: ["phase", "seconds", "MB/s (clients)", "Hub file bytes", "vs the models' bytes"],
      rows: [
        ["cold: 8 clients x 4 models, empty replicas and backend", secs(coldSecs), mbs(logical, coldSecs), mb(coldHub), pct(ratioHub)],
        ["warm: fresh replicas over the warm backend", secs(warmSecs), mbs(logical, warmSecs), mb(warmHub), pct(warmHub / pulledBytes)],
        ["warm again through the balancer (replicas hold what they served)", secs(warmed), mbs(logical, warmed), "", ""],
        ["warm, straight from one replica", secs(direct), mbs(logical, direct), "", ""],
        ["warm, through the balancer over 3 replicas", secs(balanced), mbs(logical, balanced), "", ""],
        [`first manifest of a new model through the balancer (conversion ${secs(conversionSecs)} s)`, secs(manifestSecs), "", "", ""],
      ],
      targets: [
        { what: "cold: Hub bytes <= 1.1x the models'", measured: `${ratioHub.toFixed(3)}x`, met: ratioHub <= 1.1 },
        { what: "warm: 0 Hub file bytes", measured: `${warmHub} bytes`, met: warmHub === 0 },
        { what: "first-manifest latency = conversion + < 1 s", measured: `conversion + ${secs(overhead)} s`, met: overhead < 1 },
        { what: "warm throughput through the balancer >= 80 % of one replica's", measured: pct(throughput), met: throughput >= 0.8 },
      ],
      notes: ["On this machine every process (3 replicas, haproxy, distribution, moto, 8 clients) shares its cores: the balancer's figure measures the overhead of the extra hop and replicas, not a gain from them."],
    };
  } finally {
    await scratch.cleanup();
  }
}

/** The conversion seconds the replica that converted `repo` logged. */
function convertSeconds(reps: Replicas, repo: string): number {
  for (const r of reps.replicas) {
    for (const line of r.log().split("\n")) {
      if (!line.includes('"event":"convert-done"') || !line.includes(`hf://${repo}@`)) continue;
      return (JSON.parse(line) as { seconds: number }).seconds;
    }
  }
  throw new Error(`no replica logged converting ${repo}`);
}
