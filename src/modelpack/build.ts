/**
 * The CNCF ModelPack view of a stored cake model (https://github.com/modelpack/model-spec,
 * docs/spec.md and docs/config.md): one raw layer per original file, its digest the file's sha256
 * (known from the recipe: no byte is read to build it), `org.cncf.model.filepath` and the title on
 * each; a config valid against the spec's JSON schema (vendored in ./schema). The layers' bytes are
 * the files the recipe rebuilds (model/file-range.ts), so the view costs no second copy.
 *
 * A pure function of the stored revision, serialized with a fixed key order: the same revision gives
 * the same bytes and digests, whoever builds it and wherever it is pushed.
 */
import { sha256Digest } from "../digest.js";
import { fileMediaType, type ModelConfig, type Recipe, type RecipeFile } from "../format/artifact.js";
import { ANN, MT, type Descriptor, type ImageManifest } from "../format/oci.js";
import { MP, MP_ANN } from "./media-types.js";
import { paramSize, precisionOf } from "./tensor-stats.js";

/**
 * `descriptor.createdAt` is the commit's date, which a Hub pull records in the config's source; when
 * there is none (a folder, a registry artifact, a model pulled before cake recorded it): the Unix
 * epoch, as reproducible builds do with SOURCE_DATE_EPOCH=0 — never the time of the build.
 */
export const FIXED_CREATED_AT = "1970-01-01T00:00:00Z";

/** The ModelPack config (docs/config.md), in the key order cake writes it. */
export interface ModelPackConfig {
  descriptor: { createdAt: string; name?: string; revision?: string };
  config: { format?: string; paramSize?: string; precision?: string };
  modelfs: { type: "layers"; diffIds: string[] };
}

export interface ModelPackLayer {
  desc: Descriptor;
  /** The recipe's file whose bytes the layer is. */
  file: RecipeFile;
}

export interface ModelPackView {
  manifest: ImageManifest;
  manifestBytes: Buffer;
  manifestDigest: string;
  config: ModelPackConfig;
  configBytes: Buffer;
  configDesc: Descriptor;
  /** One per file, in the recipe's order (by path); two files with the same bytes share a digest. */
  layers: ModelPackLayer[];
}

export interface ModelPackInput {
  config: ModelConfig;
  recipe: Recipe;
  /** The cake manifest the view is built from: linked by annotation. */
  cakeManifestDigest: string;
  /** The commit's date (RFC 3339) when known; else FIXED_CREATED_AT. */
  createdAt?: string;
}

/** The layer media type of a file: safetensors files are weights, the rest as cake's artifact types them. */
const layerMediaType = (f: RecipeFile) => (f.parts !== undefined ? MP.weight : fileMediaType(f.path));

/** The model's format as ModelPack names it: by its weight files. */
function formatOf(files: readonly { path: string; format: string }[]): string | undefined {
  if (files.some((f) => f.format === "safetensors")) return "safetensors";
  const ext = (re: RegExp) => files.some((f) => re.test(f.path.toLowerCase()));
  if (ext(/\.gguf$/)) return "gguf";
  if (ext(/\.onnx$/)) return "onnx";
  if (ext(/\.(pt|pth|bin)$/)) return "pt";
  return undefined;
}

const json = (v: unknown) => Buffer.from(JSON.stringify(v), "utf8");

export function buildModelPack(input: ModelPackInput): ModelPackView {
  const { config: cake, recipe } = input;
  const layers: ModelPackLayer[] = recipe.files.map((f) => ({
    file: f,
    desc: { mediaType: layerMediaType(f), digest: `sha256:${f.sha256}`, size: f.size, annotations: { [MP_ANN.filepath]: f.path, [MP_ANN.title]: f.path } },
  }));
  const tensors = cake.files.flatMap((f) => f.tensors ?? []);
  const hf = cake.source.type === "hf" ? cake.source : undefined;
  const format = formatOf(cake.files);
  const size = paramSize(tensors);
  const precision = precisionOf(tensors);
  const config: ModelPackConfig = {
    descriptor: { createdAt: hf?.date ?? input.createdAt ?? FIXED_CREATED_AT, ...(hf ? { name: hf.repo, revision: hf.commit } : {}) },
    config: { ...(format ? { format } : {}), ...(size ? { paramSize: size } : {}), ...(precision ? { precision } : {}) },
    // Raw layers: a layer's DiffID is its digest (config.md: the hash of the uncompressed content).
    modelfs: { type: "layers", diffIds: layers.map((l) => l.desc.digest) },
  };
  const configBytes = json(config);
  const configDesc: Descriptor = { mediaType: MP.config, digest: sha256Digest(configBytes), size: configBytes.length };
  const annotations: Record<string, string> = {
    [MP_ANN.cakeManifest]: input.cakeManifestDigest,
    ...(hf ? { [ANN.hfRepo]: hf.repo, [ANN.hfCommit]: hf.commit, [ANN.revision]: hf.commit } : {}),
  };
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MT.manifest,
    artifactType: MP.artifactType,
    config: configDesc,
    layers: layers.map((l) => l.desc),
    annotations,
  };
  const manifestBytes = json(manifest);
  return { manifest, manifestBytes, manifestDigest: sha256Digest(manifestBytes), config, configBytes, configDesc, layers };
}
