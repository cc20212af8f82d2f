/** What the store holds, for `ls`, `inspect`, `rm` and `gc`: read from manifests and configs. */
import { CakeError } from "../errors.js";
import type { Artifact, ModelConfig } from "../format/artifact.js";
import { ANN, MANIFEST_LIMIT, MT, type Descriptor } from "../format/oci.js";
import { parseConfig, parseManifest } from "../format/recipe.js";
import { storedBytes } from "./compress.js";
import type { Store } from "../store/layout.js";
import { canonicalRef } from "./source.js";

export interface ModelSummary {
  ref: string;
  digest: string;
  commit?: string;
  files: number;
  tensors: number;
  bytes: number;
  /** What its layers take in the store: less than their raw bytes when some are stored compressed (shared layers count in each model). */
  stored: number;
  /** A Hub reference loaded from an archive that the Hub has not confirmed yet (see hf-check.ts). */
  unverified?: true;
}

export async function readConfig(store: Store, manifestDigest: string): Promise<ModelConfig | undefined> {
  try {
    const m = JSON.parse((await store.readBlob(manifestDigest, MANIFEST_LIMIT)).toString("utf8")) as { config?: { mediaType?: string; digest?: string } };
    if (m.config?.mediaType !== MT.config || !m.config.digest) return undefined;
    return parseConfig(await store.readBlob(m.config.digest), `config ${m.config.digest}`);
  } catch {
    return undefined;
  }
}

/** A store tag of a Hub reference loaded from an archive (without --trust) that the Hub has not confirmed yet. */
export const isUnverified = (d: Descriptor | undefined): boolean => typeof d?.annotations?.[ANN.hfUnverified] === "string";

/** The Hub commit a stored model came from: its tag says (a pull), else its config (a loaded archive). */
const hubCommitOf = (descriptor: Descriptor, cfg: ModelConfig | undefined) =>
  descriptor.annotations?.[ANN.hfCommit] ?? (cfg?.source.type === "hf" ? cfg.source.commit : undefined);

/** A reference the store holds whole (its manifest is there), and the Hub commit it came from. */
export async function storedModel(store: Store, ref: string): Promise<{ descriptor: Descriptor; commit?: string } | undefined> {
  const descriptor = await store.resolve(ref);
  if (!descriptor || !(await store.hasBlob(descriptor.digest))) return undefined;
  const commit = hubCommitOf(descriptor, await readConfig(store, descriptor.digest));
  return { descriptor, ...(commit ? { commit } : {}) };
}

export async function listModels(store: Store): Promise<ModelSummary[]> {
  const out: ModelSummary[] = [];
  for (const { ref, descriptor } of await store.tags()) {
    const cfg = await readConfig(store, descriptor.digest);
    const commit = hubCommitOf(descriptor, cfg);
    const manifest = await store
      .readBlob(descriptor.digest, MANIFEST_LIMIT)
      .then((b) => parseManifest(b, `${ref} manifest`))
      .catch(() => undefined);
    out.push({
      ref,
      digest: descriptor.digest,
      ...(commit ? { commit } : {}),
      files: cfg?.files.length ?? 0,
      tensors: cfg?.files.reduce((n, f) => n + (f.tensors?.length ?? 0), 0) ?? 0,
      bytes: cfg?.files.reduce((n, f) => n + f.size, 0) ?? 0,
      stored: manifest ? (await storedBytes(store, manifest)).stored : 0,
      ...(isUnverified(descriptor) ? { unverified: true as const } : {}),
    });
  }
  return out;
}

/**
 * Removes a reference. For a Hub model the commit tag goes too, unless another revision still
 * names that commit: `cake rm hf://org/name` then `cake gc` frees the model.
 */
export async function removeModel(store: Store, ref: string): Promise<string[]> {
  const key = canonicalRef(ref);
  const tags = await store.tags();
  const target = tags.find((t) => t.ref === key);
  if (!target) throw new CakeError("E_NOT_FOUND", `${ref}: not in the store ${store.root}`);
  const removed = [key];
  await store.untag(key);
  const rest = tags.filter((t) => t.ref !== key && t.descriptor.digest === target.descriptor.digest);
  const commit = target.descriptor.annotations?.[ANN.hfCommit];
  const named = rest.filter((t) => !commit || !t.ref.endsWith(`@${commit}`));
  if (named.length === 0) {
    for (const t of rest) {
      await store.untag(t.ref);
      removed.push(t.ref);
    }
  }
  return removed;
}

/**
 * Stores an artifact's config, recipe and manifest, all at once (nothing points at them until a tag
 * does), and returns the manifest's descriptor for the tag.
 */
export async function storeArtifact(store: Store, artifact: Artifact): Promise<Descriptor> {
  const [, , digest] = await Promise.all([store.putBytes(artifact.configBytes), store.putBytes(artifact.recipeBytes), store.putBytes(artifact.manifestBytes)]);
  if (digest !== artifact.manifestDigest) throw new CakeError("E_DIGEST", `manifest digest drift: ${digest} stored, ${artifact.manifestDigest} built`);
  return { mediaType: MT.manifest, digest, size: artifact.manifestBytes.length, artifactType: MT.artifact };
}
