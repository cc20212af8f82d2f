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
import { registryBlobJob } from "./range-source.js";
import { ociRefName } from "./ref.js";
import { canonicalRef } from "./source.js";
import { kindName, readModelManifest, type ModelLayers } from "../modelpack/read-manifest.js";
import { pullModelArtifact, type ModelPullResult } from "../modelpack/pull.js";
import type { ImageManifest } from "../format/oci.js";
import { readConfig } from "./catalog.js";

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
  /** Told lines worth a user's eye that are not errors (a registry that ignores Range). */
  onNotice?: (line: string) => void;
}

export interface RegistryPullResult {
  ref: string;
  manifestDigest: string;
  blobs: number;
  stats: TransferStats;
  /**
   * Another tool's model artifact (ModelPack, Docker Model Runner, KitOps), stored as a cake model:
   * `manifestDigest` is then the cake manifest's, `source` the registry's; `upToDate` when stored before.
   */
  converted?: { kind: string; source: string; files: number; upToDate: boolean; reused: ModelPullResult["reused"] };
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
  const layers = manifest.artifactType === MT.artifact ? undefined : readModelManifest(manifest, name);
  if (layers) return pullConverted(client, ref.repository, name, manifest, digest, layers, opts);
  const root = { mediaType: manifest.mediaType ?? MT.manifest, digest, size: bytes.length, ...(manifest.artifactType ? { artifactType: manifest.artifactType } : {}) };
  // The whole graph (a subject's manifest too): manifests read now, blobs fetched by the engine.
  const { documents, blobs: descs } = await collectGraph(root, async (d) => (d.digest === digest ? bytes : (await client.getManifest(ref.repository, d.digest)).bytes), name);
  const { store } = opts;
  return store.withLease(async () => {
    const jobs = descs.map((d) => registryBlobJob(store, client, ref.repository, d, `${name} blob ${d.digest}`));
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
  });
}

/** Another tool's model artifact, stored as a cake model (src/modelpack/) and tagged as `name`. */
async function pullConverted(client: RegistryClient, repository: string, name: string, manifest: ImageManifest, digest: string, layers: ModelLayers, opts: RegistryPullOptions): Promise<RegistryPullResult> {
  const { store } = opts;
  return store.withLease(async () => {
    const kind = kindName(layers.kind);
    // Stored from this very manifest before: nothing to fetch (the stored model's config names it).
    const have = await store.resolve(name);
    const config = have ? await readConfig(store, have.digest) : undefined;
    if (have && config?.source.type === "registry" && config.source.manifest === digest) {
      return { ref: name, manifestDigest: have.digest, blobs: 0, stats: { fetchedBytes: 0, skippedBlobs: 0 }, converted: { kind, source: digest, files: config.files.length, upToDate: true, reused: { tensors: 0, bytes: 0, models: [] } } };
    }
    const r = await pullModelArtifact({
      store,
      client,
      repository,
      name,
      manifest,
      manifestDigest: digest,
      layers,
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
      ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
      ...(opts.progress ? { progress: opts.progress } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.onNotice ? { onNotice: opts.onNotice } : {}),
    });
    // Every file matched its layer's sha256 (raw layers) or came out of a verified tar layer: export need not hash again.
    await store.markVerified(r.desc.digest);
    await store.tag(name, ociRefName(name), r.desc);
    return { ref: name, manifestDigest: r.desc.digest, blobs: layers.raw.length + layers.tars.length, stats: r.stats, converted: { kind, source: digest, files: r.files, upToDate: false, reused: r.reused } };
  });
}
