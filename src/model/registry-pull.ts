/**
 * `cake pull host/repo[:tag|@digest]`: an OCI artifact from a registry into the store. The manifest
 * (verified against the digest asked for, or the registry's) turns into the list of blobs the store
 * lacks; the shared engine fetches only those, big ones as parallel Range requests, each verified
 * before it is visible. A fine-tune whose changed tensors are two blobs costs two blobs.
 */
import { CakeError } from "../errors.js";
import { collectGraph } from "../format/graph.js";
import { MT } from "../format/oci.js";
import { parseManifest } from "../format/recipe.js";
import { parseReference, RegistryClient, type RegistryClientOptions } from "../registry/index.js";
import type { Store } from "../store/layout.js";
import { transferBlobs, type TransferStats } from "../transfer/engine.js";
import type { ProgressSink } from "../transfer/progress.js";
import { digestJob, registryBlobSource } from "./range-source.js";
import { ociRefName } from "./ref.js";
import { canonicalRef } from "./source.js";

export interface RegistryAccess {
  plainHttp?: boolean;
  username?: string;
  password?: string;
  dockerConfig?: string;
}

/** A client of `registry` with these credentials; `tuning` for the rare caller with other needs (retries). */
export function clientFor(registry: string, access: RegistryAccess = {}, tuning: Pick<RegistryClientOptions, "retry"> = {}): RegistryClient {
  const opts: RegistryClientOptions = { registry, userAgent: "cake/0.1", ...tuning };
  if (access.plainHttp) opts.plainHttp = true;
  if (access.username !== undefined) opts.username = access.username;
  if (access.password !== undefined) opts.password = access.password;
  if (access.dockerConfig !== undefined) opts.dockerConfig = access.dockerConfig;
  return new RegistryClient(opts);
}

export interface RegistryPullOptions extends RegistryAccess {
  store: Store;
  concurrency?: number;
  chunkSize?: number;
  progress?: ProgressSink;
  /** Cancels the pull: requests in flight stop, nothing is tagged (what landed stays for a rerun). */
  signal?: AbortSignal;
}

export interface RegistryPullResult {
  ref: string;
  manifestDigest: string;
  blobs: number;
  stats: TransferStats;
}

export async function pullFromRegistry(refString: string, opts: RegistryPullOptions): Promise<RegistryPullResult> {
  const ref = parseReference(refString);
  const name = canonicalRef(refString);
  const client = clientFor(ref.registry, opts);
  const { bytes, digest, mediaType } = await client.getManifest(ref.repository, ref.digest ?? ref.tag ?? "latest");
  if (mediaType === MT.index || mediaType === MT.dockerList) {
    throw new CakeError("E_REGISTRY", `${name}: is an image index, not a model artifact manifest`);
  }
  const manifest = parseManifest(bytes, `${name} manifest`);
  const root = { mediaType: manifest.mediaType ?? MT.manifest, digest, size: bytes.length, ...(manifest.artifactType ? { artifactType: manifest.artifactType } : {}) };
  // The whole graph (a subject's manifest too): manifests read now, blobs fetched by the engine.
  const { documents, blobs: descs } = await collectGraph(root, async (d) => (d.digest === digest ? bytes : (await client.getManifest(ref.repository, d.digest)).bytes), name);
  const { store } = opts;
  const release = await store.lease();
  try {
    const jobs = descs.map((d) => digestJob(store, d.digest, d.size, registryBlobSource(client, ref.repository, d.digest, d.size, d.digest), `${name} blob ${d.digest}`));
    const { stats } = await transferBlobs(store, jobs, {
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
      ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
      ...(opts.progress ? { progress: opts.progress } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    // Children before parents: the tagged manifest last.
    for (const m of documents.reverse()) {
      const stored = await store.putBytes(m.bytes);
      if (stored !== m.desc.digest) throw new CakeError("E_DIGEST", `${name}: manifest hashes to ${stored}, not ${m.desc.digest}`);
    }
    await store.tag(name, ociRefName(name), root);
    await store.recordLocations(ref.registry, ref.repository, descs.map((d) => d.digest));
    return { ref: name, manifestDigest: digest, blobs: descs.length, stats };
  } finally {
    await release();
  }
}
