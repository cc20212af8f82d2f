/**
 * `cake diff A B`: what B shares with A, tensor by tensor, read from the two configs (the store's,
 * or fetched from the registry: manifest + config only, never the tensors), and how many bytes a
 * pull of B costs when A is already here.
 */
import { CakeError } from "../errors.js";
import { DOCUMENT_LIMIT, tensorIdentity, type ConfigTensor, type ModelConfig } from "../format/artifact.js";
import { MT, type ImageManifest } from "../format/oci.js";
import { parseConfig, parseManifest } from "../format/recipe.js";
import { isHfRef } from "./ref.js";
import { parseReference } from "../registry/reference.js";
import type { Store } from "../store/layout.js";
import { clientFor, type RegistryAccess } from "./registry-pull.js";
import { readStoredManifest } from "./source.js";

export interface Side {
  manifest: ImageManifest;
  config: ModelConfig;
}

async function loadSide(ref: string, store: Store, access: RegistryAccess): Promise<Side> {
  const stored = await readStoredManifest(store, ref).catch((err) => {
    if (isHfRef(ref)) throw err;
    return undefined;
  });
  let manifest: ImageManifest;
  let configBytes: Buffer;
  if (stored) {
    manifest = stored.manifest;
    configBytes = await store.readBlob(manifest.config.digest);
  } else {
    const r = parseReference(ref);
    const client = clientFor(r.registry, access);
    const m = await client.getManifest(r.repository, r.digest ?? r.tag ?? "latest");
    manifest = parseManifest(m.bytes, `${ref} manifest`);
    configBytes = await client.readBlob(r.repository, manifest.config.digest, DOCUMENT_LIMIT);
  }
  if (manifest.config.mediaType !== MT.config) throw new CakeError("E_RECIPE", `${ref}: not a cake model artifact`);
  return { manifest, config: parseConfig(configBytes, `${ref} config`) };
}

export interface DiffCount {
  tensors: number;
  bytes: number;
  names: string[];
}

export interface ModelDiff {
  shared: DiffCount;
  changed: DiffCount;
  added: DiffCount;
  removed: DiffCount;
  /** Bytes of B's blobs that A does not have: what pulling B costs next to A. */
  transferBytes: number;
  totalBytes: number;
}

const tensorsOf = (c: ModelConfig) => {
  const m = new Map<string, ConfigTensor>();
  for (const f of c.files) for (const t of f.tensors ?? []) m.set(t.name, t);
  return m;
};

/** A tensor's identity (tensorIdentity) in the model of `manifest`, whose layers give blob sizes. */
export function identityIn(manifest: ImageManifest | undefined): (t: ConfigTensor) => string {
  const sizes = new Map((manifest?.layers ?? []).map((l) => [l.digest, l.size]));
  return (t) => tensorIdentity(t, (d) => sizes.get(d));
}

/**
 * Tensor by tensor, by the bytes themselves (their own sha256, which a packed tensor has in a config
 * cake writes today; else, in an older config, where they lie): a tensor packed next to a changed
 * one is still shared. `transferBytes` counts blobs, what a pull moves.
 */
export function diffConfigs(a: Side, b: Side): ModelDiff {
  const ta = tensorsOf(a.config);
  const tb = tensorsOf(b.config);
  const count = (): DiffCount => ({ tensors: 0, bytes: 0, names: [] });
  const d = { shared: count(), changed: count(), added: count(), removed: count() };
  const add = (c: DiffCount, name: string, bytes: number) => {
    c.tensors++;
    c.bytes += bytes;
    c.names.push(name);
  };
  const idA = identityIn(a.manifest);
  const idB = identityIn(b.manifest);
  for (const [name, t] of tb) {
    const o = ta.get(name);
    if (!o) add(d.added, name, t.size);
    else if (idA(o) === idB(t)) add(d.shared, name, t.size);
    else add(d.changed, name, t.size);
  }
  for (const [name, t] of ta) if (!tb.has(name)) add(d.removed, name, t.size);
  const have = new Set([a.manifest.config.digest, ...a.manifest.layers.map((l) => l.digest)]);
  const blobs = [b.manifest.config, ...b.manifest.layers];
  return {
    ...d,
    transferBytes: blobs.filter((l) => !have.has(l.digest)).reduce((n, l) => n + l.size, 0),
    totalBytes: blobs.reduce((n, l) => n + l.size, 0),
  };
}

export async function diffModels(a: string, b: string, store: Store, access: RegistryAccess = {}): Promise<ModelDiff> {
  const [sa, sb] = await Promise.all([loadSide(a, store, access), loadSide(b, store, access)]);
  return diffConfigs(sa, sb);
}
