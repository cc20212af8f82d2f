/**
 * Registry helpers for the scenarios: push a model folder with cake (setup, not measured), read a
 * manifest back, and split the blob bytes a counting proxy saw into tensor bytes and the rest.
 */
import fs from "node:fs/promises";
import type { CountingProxy } from "../../test/registry/counting-proxy.js";
import { cakeEnv } from "./context.js";
import { cake, medianOf, type Scratch } from "./proc.js";

const TENSOR_TYPES = new Set(["application/vnd.cake.tensor.v1.raw", "application/vnd.cake.tensor-pack.v1.raw"]);

interface Manifest {
  config: { digest: string; size: number; mediaType: string };
  layers: { digest: string; size: number; mediaType: string }[];
}

/** `cake push <dir> <ref>` with a throwaway store (the model is imported, then uploaded). */
export async function pushDir(dir: string, ref: string, store: string): Promise<void> {
  await cake(["push", "-q", dir, ref], cakeEnv(undefined, store));
}

export async function getManifest(registryUrl: string, repo: string, tag: string): Promise<Manifest> {
  const res = await fetch(`${registryUrl}/v2/${repo}/manifests/${tag}`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } });
  if (!res.ok) throw new Error(`manifest ${repo}:${tag}: HTTP ${res.status}`);
  return (await res.json()) as Manifest;
}

/** Bytes of tensor and pack layers in a manifest. */
export const tensorBytesOf = (m: Manifest) => m.layers.filter((l) => TENSOR_TYPES.has(l.mediaType)).reduce((n, l) => n + l.size, 0);

/** Blob bytes the proxy sent down since its last reset: all of them, and those of tensor layers of `m`. */
export function blobBytes(proxy: CountingProxy, m: Manifest): { all: number; tensor: number } {
  const tensorDigests = new Set(m.layers.filter((l) => TENSOR_TYPES.has(l.mediaType)).map((l) => l.digest));
  let tensor = 0;
  for (const r of proxy.requests) {
    if (r.method !== "GET" || r.kind !== "blob") continue;
    const digest = decodeURIComponent(r.path.split("?")[0]!.split("/").pop()!);
    if (tensorDigests.has(digest)) tensor += r.down;
  }
  return { all: proxy.bytes("down", "GET", "blob"), tensor };
}

/**
 * What a second pull costs after a first one: per run, a fresh directory, `first` (not counted),
 * the proxy's counters reset, `second`; medians of its seconds and of the blob bytes it moved
 * (all, and those of tensor layers of `m`).
 */
export function secondPull(
  runs: number,
  scratch: Scratch,
  prefix: string,
  proxy: CountingProxy,
  m: Manifest,
  first: (dir: string) => Promise<unknown>,
  second: (dir: string) => Promise<{ secs: number }>,
) {
  return medianOf(runs, async () => {
    const d = await scratch.dir(prefix);
    await first(d);
    proxy.reset();
    const t = await second(d);
    const b = blobBytes(proxy, m);
    await fs.rm(d, { recursive: true, force: true });
    return { secs: t.secs, bytes: b.all, tensor: b.tensor };
  });
}
