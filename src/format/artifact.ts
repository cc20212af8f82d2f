/**
 * The model <-> OCI artifact mapping (docs/format.md): from a model's files and the digests of its
 * units to the three JSON documents of the artifact — the manifest, the config (what the model is)
 * and the recipe (how to rebuild every file byte for byte) — and back.
 *
 * Everything here is a pure function of its inputs, serialized with a fixed key order: the same
 * model revision gives the same manifest digest whoever converts it.
 */
import { sha256Digest } from "../digest.js";
import { CakeError } from "../errors.js";
import { CAKE_DIR } from "./paths.js";
import { ANN, MT, type Descriptor, type ImageManifest } from "./oci.js";
import type { ModelFile, Plan, Unit } from "./plan.js";

export const EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
export const RECIPE_TITLE = `${CAKE_DIR}/recipe.json`;
export const blobTitle = (digest: string) => `${CAKE_DIR}/blobs/sha256/${digest.slice(7)}`;

export { sha256Digest };

/** The most a config or recipe may weigh when read back (a 7B model's config is about 6 MB). */
export const DOCUMENT_LIMIT = 64 << 20;

export interface RecipeFile {
  path: string;
  size: number;
  sha256: string;
  gitOid?: string;
  lfs?: true;
  /** Whole file: its blob. */
  digest?: string;
  /** safetensors: the exact first 8 + N bytes (base64) and the blobs that follow, in order. */
  header?: string;
  parts?: string[];
}

export interface Recipe {
  schemaVersion: 1;
  mediaType: typeof MT.recipe;
  files: RecipeFile[];
  /** Every blob the files use: its size and its title (file name) in an `oras pull` directory. */
  blobs: Record<string, { size: number; title: string }>;
}

export interface ConfigTensor {
  name: string;
  dtype: string;
  shape: number[];
  /** The blob holding the tensor, and where in it. */
  digest: string;
  offset: number;
  size: number;
  /**
   * sha256 (hex) of the tensor's own bytes: the blob's for a tensor of its own, its sub-range's in a
   * pack. Every config cake writes has it; older ones lack it (see tensorIdentity).
   */
  sha256?: string;
}

/**
 * What a tensor's bytes are, as one string: equal strings, equal bytes. `sha256:<hex>` of the bytes
 * when the config says (`sha256`), or when the tensor is the whole blob `digest` (`blobSize` from the
 * manifest); else, in an older config, where the bytes lie (blob, offset, size), which tells packed
 * tensors apart only by their pack.
 */
export function tensorIdentity(t: ConfigTensor, blobSize: (digest: string) => number | undefined): string {
  if (t.sha256) return `sha256:${t.sha256}`;
  if (t.size === 0) return EMPTY_DIGEST;
  if (t.offset === 0 && blobSize(t.digest) === t.size) return t.digest;
  return `${t.digest}+${t.offset}+${t.size}`;
}


export interface ConfigFile {
  path: string;
  size: number;
  sha256: string;
  gitOid?: string;
  format: "safetensors" | "raw";
  metadata?: Record<string, string>;
  tensors?: ConfigTensor[];
}

export interface ModelConfig {
  schemaVersion: 1;
  mediaType: typeof MT.config;
  /**
   * Where the files came from: a Hub commit, a local folder, or another tool's artifact on a
   * registry (ModelPack, Docker Model Runner, KitOps: `repository` is host/repo, `manifest` its digest).
   */
  source: { type: "hf"; repo: string; commit: string; date?: string } | { type: "dir" } | { type: "registry"; repository: string; manifest: string };
  layerRule: { threshold: number; packFactor: number; maxLayers: number };
  files: ConfigFile[];
}

export interface Artifact {
  manifest: ImageManifest;
  manifestBytes: Buffer;
  manifestDigest: string;
  config: ModelConfig;
  configBytes: Buffer;
  recipe: Recipe;
  recipeBytes: Buffer;
}

/** Media type of a whole non-tensor file: ModelPack's raw layer types, by what the file is. */
export function fileMediaType(path: string): string {
  const base = path.split("/").pop()!.toLowerCase();
  if (/\.(bin|pt|pth|gguf|onnx|h5|msgpack|ckpt|safetensors|npz|tflite|mlmodel|ot)$/.test(base)) return MT.mpWeight;
  if (/^(readme|license|licence|notice|use_policy|copying)(\..*)?$/.test(base) || /\.(md|rst|pdf|png|jpe?g|gif|svg)$/.test(base)) return MT.mpDoc;
  if (/\.(py|sh|ipynb|js|ts|cpp|cu|c|h)$/.test(base)) return MT.mpCode;
  return MT.mpWeightConfig;
}

const json = (v: unknown) => Buffer.from(JSON.stringify(v), "utf8");

export interface BuildInput {
  files: ModelFile[]; // sorted by path, every one with sha256
  plan: Plan;
  /** The digest of each unit's bytes, index-aligned with plan.units. */
  unitDigests: string[];
  /**
   * The sha256 (hex) of each tensor of a pack holding more than one tensor with bytes, in the pack's
   * order, index-aligned with plan.units (see hashPackedTensors); other tensors' follow from the digests.
   */
  packedTensorHashes: (readonly string[] | undefined)[];
  source: ModelConfig["source"];
  maxLayers: number;
  packFactor: number;
}

/** Whether a unit's tensors need their own hashes: more than one of them has bytes. */
export const needsTensorHashes = (unit: Unit) => unit.tensors.filter((t) => t.end > t.begin).length > 1;

/** The sha256 (hex) of tensor `j` of `unit`: empty, the whole blob, or hashed from the pack. */
function tensorSha256(unit: Unit, j: number, digest: string, hashes: readonly string[] | undefined): string {
  const t = unit.tensors[j]!;
  if (t.end === t.begin) return EMPTY_DIGEST.slice(7);
  if (!needsTensorHashes(unit)) return digest.slice(7);
  const hex = hashes?.[j];
  if (!hex) throw new CakeError("E_RECIPE", `${unit.path}: tensor ${t.name} is packed but was not hashed; the artifact cannot be built`);
  return hex;
}

export function buildArtifact(input: BuildInput): Artifact {
  const { files, plan, unitDigests } = input;
  const byFile = new Map<string, { unit: Unit; digest: string; hashes: readonly string[] | undefined }[]>();
  plan.units.forEach((unit, i) => {
    const list = byFile.get(unit.path) ?? [];
    list.push({ unit, digest: unitDigests[i]!, hashes: input.packedTensorHashes[i] });
    byFile.set(unit.path, list);
  });

  // Layers: whole files first (so a file's title wins when its bytes equal a tensor's), then
  // tensors and packs in file order. One descriptor per distinct digest.
  const layers: Descriptor[] = [];
  const blobs: Recipe["blobs"] = {};
  const addLayer = (digest: string, size: number, mediaType: string, title: string, extra?: Record<string, string>) => {
    if (blobs[digest]) return;
    blobs[digest] = { size, title };
    layers.push({ mediaType, digest, size, annotations: { [ANN.title]: title, ...extra } });
  };
  for (const f of files) {
    if (f.safetensors) continue;
    const digest = byFile.get(f.path)![0]!.digest;
    addLayer(digest, f.size, fileMediaType(f.path), f.path, { [ANN.mpFilepath]: f.path });
  }
  for (const f of files) {
    if (!f.safetensors) continue;
    for (const { unit, digest } of byFile.get(f.path) ?? []) {
      addLayer(digest, unit.end - unit.begin, unit.kind === "pack" ? MT.pack : MT.tensor, blobTitle(digest));
    }
  }

  const recipe: Recipe = {
    schemaVersion: 1,
    mediaType: MT.recipe,
    files: files.map((f) => {
      const units = byFile.get(f.path) ?? [];
      const base = { path: f.path, size: f.size, sha256: f.sha256!, ...(f.gitOid ? { gitOid: f.gitOid } : {}), ...(f.lfs ? { lfs: true as const } : {}) };
      if (!f.safetensors) return { ...base, digest: units[0]!.digest };
      return { ...base, header: f.safetensors.headerBytes.toString("base64"), parts: units.map((u) => u.digest) };
    }),
    blobs: Object.fromEntries(Object.entries(blobs).sort(([a], [b]) => (a < b ? -1 : 1))),
  };

  const config: ModelConfig = {
    schemaVersion: 1,
    mediaType: MT.config,
    source: input.source,
    layerRule: { threshold: plan.threshold, packFactor: input.packFactor, maxLayers: input.maxLayers },
    files: files.map((f) => {
      const base = { path: f.path, size: f.size, sha256: f.sha256!, ...(f.gitOid ? { gitOid: f.gitOid } : {}) };
      if (!f.safetensors) return { ...base, format: "raw" as const };
      const tensors: ConfigTensor[] = [];
      const placed = new Map<string, { digest: string; offset: number; sha256: string }>();
      for (const { unit, digest, hashes } of byFile.get(f.path) ?? []) {
        const first = unit.tensors[0]!.begin;
        unit.tensors.forEach((t, j) => placed.set(t.name, { digest, offset: t.begin - first, sha256: tensorSha256(unit, j, digest, hashes) }));
      }
      for (const t of f.safetensors.header.tensors) {
        const at = placed.get(t.name) ?? { digest: EMPTY_DIGEST, offset: 0, sha256: EMPTY_DIGEST.slice(7) };
        tensors.push({ name: t.name, dtype: t.dtype, shape: t.shape, digest: at.digest, offset: at.offset, size: t.end - t.begin, sha256: at.sha256 });
      }
      const md = f.safetensors.header.metadata;
      return { ...base, format: "safetensors" as const, ...(md ? { metadata: { ...md } } : {}), tensors };
    }),
  };

  const recipeBytes = json(recipe);
  const configBytes = json(config);
  const recipeDesc: Descriptor = {
    mediaType: MT.recipe,
    digest: sha256Digest(recipeBytes),
    size: recipeBytes.length,
    annotations: { [ANN.title]: RECIPE_TITLE },
  };
  const annotations: Record<string, string> =
    input.source.type === "hf"
      ? { [ANN.hfRepo]: input.source.repo, [ANN.hfCommit]: input.source.commit, [ANN.revision]: input.source.commit }
      : {};
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MT.manifest,
    artifactType: MT.artifact,
    config: { mediaType: MT.config, digest: sha256Digest(configBytes), size: configBytes.length },
    layers: [recipeDesc, ...layers.filter((l) => l.digest !== recipeDesc.digest)],
    ...(Object.keys(annotations).length ? { annotations } : {}),
  };
  const manifestBytes = json(manifest);
  return { manifest, manifestBytes, manifestDigest: sha256Digest(manifestBytes), config, configBytes, recipe, recipeBytes };
}
