/**
 * Where an artifact is read from for export/inspect: the store (by reference), a directory
 * written by `oras pull` (recipe at .cake/recipe.json, blobs under their titles), or an OCI image
 * layout (what `crane pull --format oci`, `skopeo copy … oci:DIR` and `oras copy --to-oci-layout`
 * write) holding a cake artifact or another tool's model artifact (src/modelpack/). Either way the
 * recipe is validated before use, and blobs are addressed by digest.
 */
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { CakeError } from "../errors.js";
import { DOCUMENT_LIMIT, RECIPE_TITLE, type ModelConfig, type Recipe } from "../format/artifact.js";
import { sha256Digest } from "../digest.js";
import { ANN, DIGEST_RE, hexOf, MANIFEST_LIMIT, MT, type Descriptor, type ImageManifest } from "../format/oci.js";
import { safeJoin } from "../format/paths.js";
import { parseConfig, parseManifest, parseRecipe, recipeLayer } from "../format/recipe.js";
import type { Store } from "../store/layout.js";
import { formatReference, parseReference } from "../registry/reference.js";
import { isHfRef, parseHfRef, formatHfRef } from "./ref.js";
import { readModelManifest } from "../modelpack/read-manifest.js";
import { recipeOfLayers } from "../modelpack/layout-recipe.js";

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
    throw new CakeError("E_NOT_FOUND", `${dir}: no ${RECIPE_TITLE} (not a directory written by oras pull of a cake artifact, nor an OCI layout; oras pull of a ModelPack artifact writes the model's files themselves)`);
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

/** Whether `dir` is an OCI image layout (it has an `oci-layout` file). */
export function isOciLayout(dir: string): boolean {
  return fs.existsSync(path.join(dir, "oci-layout"));
}

/** A small document of a layout, by digest, checked against it (a manifest, an index, a recipe). */
async function layoutBlob(dir: string, digest: string, where: string, limit = MANIFEST_LIMIT): Promise<Buffer> {
  if (!DIGEST_RE.test(digest)) throw new CakeError("E_RECIPE", `${where}: bad digest ${JSON.stringify(digest)}`);
  const file = safeJoin(dir, `blobs/sha256/${hexOf(digest)}`, "blob");
  const st = await fsp.stat(file).catch(() => undefined);
  if (!st?.isFile()) throw new CakeError("E_NOT_FOUND", `${where}: blob ${digest} is not in the layout`);
  if (st.size > limit) throw new CakeError("E_SIZE", `${where}: blob ${digest} is larger than ${limit} bytes`);
  const bytes = await fsp.readFile(file);
  if (sha256Digest(bytes) !== digest) throw new CakeError("E_DIGEST", `${where}: blob ${digest} does not hash to its name`);
  return bytes;
}

/** The manifest descriptor of a layout's index.json: the one tagged `tag`, else the only one. */
async function layoutManifest(dir: string, tag: string | undefined): Promise<Descriptor> {
  const where = `${dir}/index.json`;
  let index: { manifests?: Descriptor[] };
  try {
    index = JSON.parse(await fsp.readFile(path.join(dir, "index.json"), "utf8")) as typeof index;
  } catch (err) {
    throw new CakeError("E_RECIPE", `${where}: not readable as an OCI index (${(err as Error).message})`);
  }
  const all = Array.isArray(index.manifests) ? index.manifests : [];
  const tagOf = (d: Descriptor) => d.annotations?.[ANN.refName];
  const picked = tag === undefined ? (all.length === 1 ? all[0] : undefined) : all.find((d) => tagOf(d) === tag);
  if (!picked) {
    const tags = all.map(tagOf).filter((t) => t !== undefined);
    const which = tag === undefined ? `${all.length} manifests` : `no manifest tagged ${JSON.stringify(tag)}`;
    throw new CakeError("E_NOT_FOUND", `${dir}: ${which} in the layout; name one as ${dir}:<tag>${tags.length ? ` (tags: ${tags.join(", ")})` : ""}`);
  }
  // An index of one manifest (an image index written by some tools): that manifest.
  if (picked.mediaType === MT.index) {
    const inner = JSON.parse((await layoutBlob(dir, picked.digest, where)).toString("utf8")) as { manifests?: Descriptor[] };
    if (inner.manifests?.length !== 1) throw new CakeError("E_RECIPE", `${dir}: ${picked.digest} is an index of ${inner.manifests?.length ?? 0} manifests, not a model artifact`);
    return inner.manifests[0]!;
  }
  return picked;
}

/**
 * An OCI image layout at `dir` (`tag`: its index entry's org.opencontainers.image.ref.name, when it
 * holds more than one): a cake artifact (its recipe) or another tool's model artifact (its raw layers
 * as whole files). Never trusted: every export hashes each file.
 */
export async function sourceFromLayout(dir: string, tag?: string): Promise<ArtifactSource> {
  const desc = await layoutManifest(dir, tag);
  const where = tag === undefined ? dir : `${dir}:${tag}`;
  const manifest = parseManifest(await layoutBlob(dir, desc.digest, where), `${where} manifest ${desc.digest}`);
  let recipe: Recipe;
  let config: ModelConfig | undefined;
  if (manifest.artifactType === MT.artifact) {
    recipe = parseRecipe(await layoutBlob(dir, recipeLayer(manifest, where).digest, where, DOCUMENT_LIMIT), `${where} recipe`);
    config = parseConfig(await layoutBlob(dir, manifest.config.digest, where, DOCUMENT_LIMIT), `${where} config`);
    const layers = new Set(manifest.layers.map((l) => l.digest));
    for (const d of Object.keys(recipe.blobs)) if (!layers.has(d)) throw new CakeError("E_RECIPE", `${where}: recipe uses blob ${d} that the manifest does not list`);
  } else {
    const layers = readModelManifest(manifest, where);
    if (!layers) throw new CakeError("E_RECIPE", `${where}: manifest ${desc.digest} is neither a cake model artifact nor a ModelPack, Docker Model Runner or KitOps one`);
    recipe = recipeOfLayers(layers, where);
  }
  const blobFile = (d: string) => safeJoin(dir, `blobs/sha256/${hexOf(d)}`, "blob");
  return {
    where,
    recipe,
    ...(config ? { config } : {}),
    manifest,
    manifestDigest: desc.digest,
    openBlob: (d) => {
      const size = recipe.blobs[d]!.size;
      return size === 0 ? Readable.from([]) : fs.createReadStream(blobFile(d), { start: 0, end: size - 1 });
    },
    blobFile,
    // Files anyone could have edited: never trusted, every export hashes.
    verified: false,
  };
}
