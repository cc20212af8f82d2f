/**
 * Where an artifact is read from for export/inspect: the store (by reference) or a directory
 * written by `oras pull` (recipe at .cake/recipe.json, blobs under their titles). Either way the
 * recipe is validated before use, and blobs are addressed by digest.
 */
import fs from "node:fs";
import fsp from "node:fs/promises";
import { Readable } from "node:stream";
import { CakeError } from "../errors.js";
import { RECIPE_TITLE, type ModelConfig, type Recipe } from "../format/artifact.js";
import { MANIFEST_LIMIT, type ImageManifest } from "../format/oci.js";
import { safeJoin } from "../format/paths.js";
import { parseConfig, parseManifest, parseRecipe, recipeLayer } from "../format/recipe.js";
import type { Store } from "../store/layout.js";
import { formatReference, parseReference } from "../registry/reference.js";
import { isHfRef, parseHfRef, formatHfRef } from "./ref.js";

export interface ArtifactSource {
  where: string;
  recipe: Recipe;
  config?: ModelConfig;
  manifest?: ImageManifest;
  manifestDigest?: string;
  /** The first `size` bytes of a blob (never more: a hostile file cannot make export write GBs). */
  openBlob(digest: string): Readable;
  /**
   * A local file whose first `size` bytes are the blob, for copying without streams (store, oras
   * dir); undefined for a blob the store keeps in another form (compressed): read it with openBlob.
   */
  blobFile?(digest: string): string | undefined;
  /**
   * Every file of this artifact was already rebuilt from these blobs and matched its recipe sha256
   * (checked against the Hub at pull, or by an earlier export): export need not hash again.
   */
  verified?: boolean;
  /** Records that every file rebuilt to its recipe hashes (so later exports skip the hashing). */
  markVerified?(): Promise<void>;
}

/** Canonical store reference: `hf://org/name` means `hf://org/name@main`, `host/repo` means `host/repo:latest`. */
export function canonicalRef(ref: string): string {
  if (isHfRef(ref)) return formatHfRef(parseHfRef(ref));
  const r = parseReference(ref);
  return formatReference(r.digest || r.tag ? r : { ...r, tag: "latest" });
}

export async function readStoredManifest(store: Store, ref: string): Promise<{ manifest: ImageManifest; digest: string }> {
  const key = canonicalRef(ref);
  const desc = await store.resolve(key);
  if (!desc) throw new CakeError("E_NOT_FOUND", `${ref}: not in the store ${store.root} (run: cake pull ${ref})`);
  const bytes = await store.readBlob(desc.digest, MANIFEST_LIMIT);
  return { manifest: parseManifest(bytes, `${ref} manifest`), digest: desc.digest };
}

export async function sourceFromStore(store: Store, ref: string): Promise<ArtifactSource> {
  const { manifest, digest } = await readStoredManifest(store, ref);
  const rl = recipeLayer(manifest, ref);
  const recipe = parseRecipe(await store.readBlob(rl.digest), `${ref} recipe`);
  const config = parseConfig(await store.readBlob(manifest.config.digest), `${ref} config`);
  const layers = new Set(manifest.layers.map((l) => l.digest));
  for (const d of Object.keys(recipe.blobs)) {
    if (!layers.has(d)) throw new CakeError("E_RECIPE", `${ref}: recipe uses blob ${d} that the manifest does not list`);
  }
  return {
    where: ref,
    recipe,
    config,
    manifest,
    manifestDigest: digest,
    openBlob: (d) => store.openBlob(d, 0, recipe.blobs[d]!.size),
    // Store blobs hash to their names (checked at ingest); their sizes were checked against the manifest.
    blobFile: (d) => store.rawFile(d),
    verified: await store.isVerified(digest),
    markVerified: () => store.markVerified(digest),
  };
}

export async function sourceFromDir(dir: string): Promise<ArtifactSource> {
  const recipePath = safeJoin(dir, RECIPE_TITLE, "recipe");
  let bytes: Buffer;
  try {
    bytes = await fsp.readFile(recipePath);
  } catch {
    throw new CakeError("E_NOT_FOUND", `${dir}: no ${RECIPE_TITLE} (not a directory written by oras pull of a cake artifact)`);
  }
  const recipe = parseRecipe(bytes, recipePath);
  return {
    where: dir,
    recipe,
    openBlob: (d) => {
      const b = recipe.blobs[d]!;
      const file = safeJoin(dir, b.title, "blob title");
      return b.size === 0 ? Readable.from([]) : fs.createReadStream(file, { start: 0, end: b.size - 1 });
    },
    blobFile: (d) => safeJoin(dir, recipe.blobs[d]!.title, "blob title"),
    // Files anyone could have edited: never trusted, every export hashes.
    verified: false,
  };
}
