/**
 * Scale-out for real, on loopback: `cake pull` clients through haproxy (round-robin) to `cake proxy`
 * replicas (processes) that share a backend registry — CNCF distribution storing into an S3 bucket
 * (moto). Every client must end with the Hub's bytes, also when a replica dies mid-pull and when the
 * backend restarts.
 *
 * The three-replica cases need any replica to serve a blob of a model whose manifest it never served
 * (from the backend): round-robin sends a client's manifest and its blobs to different replicas;
 * without that they answered 404 BLOB_UNKNOWN (issue 23). The kill case could pass without it when
 * each surviving replica happened to convert both models itself.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { dirBytes, hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake, waitFor } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { startHaproxy, startRelays, startReplicas, startS3Registry, type Haproxy, type Relays, type Replica, type Replicas, type S3Registry } from "./topology.js";

const MODELS = ["acme/Model-A", "acme/Model-B"];
const CLIENTS = 8;
let tmp: string;
let hub: Hub;
let backend: S3Registry;
const sources = new Map<string, string>();
let running: Array<Replicas | Haproxy | Relays> = [];

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-topology-"));
  hub = await startHub();
  for (const [i, repo] of MODELS.entries()) {
    const dir = path.join(tmp, `source-${i}`);
    await makeLlamaLike(dir, { hidden: 128, layers: 2, vocab: 2048, shards: 2, seed: 11 + i });
    hub.addRepo(repo);
    await hub.commit(repo, dir);
    sources.set(repo, dir);
  }
  backend = await startS3Registry();
}, 60_000);
afterAll(async () => {
  // The last case's balancer and replicas too (each case closes the one before's).
  await Promise.all(running.map((r) => r.close()));
  await backend?.close();
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});
beforeEach(async () => {
  hub.setKnobs({ bandwidth: 0 });
  await Promise.all(running.map((r) => r.close()));
  running = [];
});

let topologyN = 0;
/** `n` replicas with empty stores on backend prefix `prefix`, haproxy in front (through `relays`, if asked). */
async function topology(n: number, prefix: string, opts: { relays?: boolean } = {}): Promise<{ lb: Haproxy; reps: Replicas; relays?: Relays }> {
  const storeRoot = path.join(tmp, `stores-${topologyN++}`);
  const reps = await startReplicas(n, { hub: hub.url, backend: `${backend.host}/${prefix}`, storeRoot });
  running.push(reps);
  const relays = opts.relays ? await startRelays(reps.replicas.map((r) => r.host)) : undefined;
  if (relays) running.push(relays);
  const lb = await startHaproxy((relays?.relays ?? reps.replicas).map((r) => r.host));
  running.push(lb);
  return { lb, reps, ...(relays ? { relays } : {}) };
}

let clientN = 0;
/** One `cake pull` + `cake export` through the balancer, in a store of its own; the export's tree hashes. */
async function pullAndExport(lb: Haproxy, repo: string): Promise<{ ok: boolean; why: string; tree?: Map<string, string> }> {
  const env = { CAKE_HOME: path.join(tmp, `client-${clientN++}`), HF_TOKEN: "" };
  const ref = `${lb.host}/hf/${repo.toLowerCase()}:main`;
  const pulled = await cake(["pull", "-q", ref], env);
  if (pulled.code !== 0) return { ok: false, why: `cake pull ${ref}: ${pulled.stderr.trim()}` };
  const out = path.join(env.CAKE_HOME, "export");
  const exported = await cake(["export", "-q", ref, out], env);
  if (exported.code !== 0) return { ok: false, why: `cake export ${ref}: ${exported.stderr.trim()}` };
  return { ok: true, why: "", tree: await hashTree(out) };
}

/** On failure, what the replicas answered (their error and backend log lines) says why. */
function replicaErrors(reps: Replicas): string {
  return reps.replicas
    .flatMap((r, i) => r.log().split("\n").filter((l) => /"status":[45]\d\d|backend-|"error"/.test(l)).slice(0, 5).map((l) => `replica-${i}: ${l}`))
    .join("\n");
}

/**
 * One client per model, one at a time: one replica converts (or takes from the backend) each model
 * and the client's blob requests go to all three. (Concurrent clients alone can pass by luck: each
 * replica gets a manifest request of each model first and converts it itself.)
 */
async function loneClientsEndIdentical(lb: Haproxy, reps: Replicas): Promise<void> {
  for (const repo of MODELS) {
    const r = await pullAndExport(lb, repo);
    expect(r.ok, `${r.why}\n${replicaErrors(reps)}`).toBe(true);
    expect(r.tree, repo).toEqual(await hashTree(sources.get(repo)!));
  }
}

/** CLIENTS concurrent clients, alternating models; every one must end with the Hub's files, byte for byte. */
async function clientsEndIdentical(lb: Haproxy, reps: Replicas, during?: () => Promise<void>): Promise<void> {
  const clients = Array.from({ length: CLIENTS }, (_, i) => MODELS[i % MODELS.length]!).map(async (repo) => ({ repo, r: await pullAndExport(lb, repo) }));
  await during?.();
  const results = await Promise.all(clients);
  const failed = results.filter((x) => !x.r.ok).map((x) => x.r.why);
  expect(failed, replicaErrors(reps)).toEqual([]);
  for (const { repo, r } of results) expect(r.tree, repo).toEqual(await hashTree(sources.get(repo)!));
}

describe("cake pull through haproxy to cake proxy replicas over a registry on S3", () => {
  it("one replica behind haproxy: 8 concurrent clients of 2 models end byte-identical", async () => {
    const { lb, reps } = await topology(1, "one");
    await clientsEndIdentical(lb, reps);
  });

  it("three replicas round-robin: one client per model at a time, then 8 concurrent clients of 2 models end byte-identical", async () => {
    const { lb, reps } = await topology(3, "three");
    await loneClientsEndIdentical(lb, reps);
    await clientsEndIdentical(lb, reps);
  });

  it("a replica killed (SIGKILL) mid-pull: the clients still end byte-identical, and so do later ones", async () => {
    const { lb, reps } = await topology(3, "kill");
    // Slow Hub: conversions (inside the clients' manifest requests) last a few seconds.
    const total = await dirBytes(sources.get(MODELS[0]!)!);
    hub.setKnobs({ bandwidth: Math.ceil(total / 2) });
    hub.counters.reset();
    await clientsEndIdentical(lb, reps, async () => {
      await waitFor(() => hub.counters.bytesServed > total / 4, 30_000, "the replicas to be converting");
      // a replica in the middle of a conversion, with clients waiting on it
      const count = (r: Replica, event: string) => r.log().split(`"event":"${event}"`).length - 1;
      const victim = reps.replicas.find((r) => count(r, "convert-start") > count(r, "convert-done"));
      expect(victim, "a replica converting when the Hub has served a quarter of a model").toBeDefined();
      victim!.child.kill("SIGKILL");
    });
    expect(reps.replicas.filter((r) => r.child.signalCode === "SIGKILL").length).toBe(1);
    await loneClientsEndIdentical(lb, reps);
  });

  it("a replica killed (SIGKILL) in the middle of blob downloads: the clients continue on the others and end byte-identical", async () => {
    const { lb, reps, relays } = await topology(3, "download", { relays: true });
    await loneClientsEndIdentical(lb, reps); // converted once, in the backend
    // Answers slowed to 256 KiB/s a connection: the clients' blob downloads last seconds.
    relays!.setRate(256 << 10);
    let cut = 0;
    await clientsEndIdentical(lb, reps, async () => {
      const downloading = () => relays!.relays.findIndex((r) => [...r.open].some((c) => c.down > 64 << 10));
      await waitFor(() => downloading() >= 0, 30_000, "a replica to be sending a blob");
      const victim = downloading();
      cut = [...relays!.relays[victim]!.open].filter((c) => c.down > 64 << 10).length;
      reps.replicas[victim]!.child.kill("SIGKILL");
    });
    expect(cut).toBeGreaterThan(0);
    expect(reps.replicas.filter((r) => r.child.signalCode === "SIGKILL").length).toBe(1);
  });

  it("the backend stopped and started again: fresh replicas serve the models from the bucket", async () => {
    const first = await topology(1, "restart");
    await loneClientsEndIdentical(first.lb, first.reps);
    await backend.stop();
    await backend.start();
    // Replicas with empty stores: what they serve comes through distribution from the S3 bucket.
    const { lb, reps } = await topology(3, "restart");
    hub.counters.reset();
    await loneClientsEndIdentical(lb, reps);
    await clientsEndIdentical(lb, reps);
    expect(hub.counters.bytesServed).toBe(0);
  });
});
