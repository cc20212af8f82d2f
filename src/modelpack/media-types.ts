/**
 * The media types of model artifacts cake writes and reads, and what each layer is:
 * - CNCF ModelPack (https://github.com/modelpack/model-spec, docs/spec.md, specs-go/v1/mediatype.go):
 *   artifactType `application/vnd.cncf.model.manifest.v1+json`, config `…model.config.v1+json`,
 *   layers `application/vnd.cncf.model.<weight|weight.config|doc|code|dataset>.v1.<raw|tar|tar+gzip|tar+zstd>`,
 *   each file's path in `org.cncf.model.filepath`. cake writes it (the mp/ view, push --format
 *   modelpack) with raw layers, the types its own artifact already uses for whole files (MT in
 *   format/oci.ts), and reads it.
 * - Docker Model Runner (docker/model-runner, pkg/distribution types): config
 *   `application/vnd.docker.ai.model.config.v0.1+json` (any `…docker.ai.model.config` version), layers
 *   `application/vnd.docker.ai.<gguf.v3|safetensors|license|mmproj|dduf|chat.template.jinja|…>`, raw.
 * - KitOps ModelKits (kitops-ml/kitops, pkg/lib/constants): config `application/vnd.kitops.modelkit.config.v1+json`,
 *   layers `application/vnd.kitops.modelkit.<model|modelpart|dataset|code|docs|prompts>.v1.<tar|tar+gzip|tar+zstd>`.
 */
import { ANN, MT } from "../format/oci.js";

export const MP = {
  artifactType: "application/vnd.cncf.model.manifest.v1+json",
  config: "application/vnd.cncf.model.config.v1+json",
  weight: MT.mpWeight,
  weightConfig: MT.mpWeightConfig,
  doc: MT.mpDoc,
  code: MT.mpCode,
} as const;

export const MP_ANN = {
  filepath: ANN.mpFilepath,
  title: ANN.title,
  /** On a ModelPack manifest cake writes: the digest of the cake manifest (per-tensor artifact) it is a view of. */
  cakeManifest: "dev.cake.model.manifest",
} as const;

/** Docker Model Runner's config media types all start so (v0.1+json today). */
export const DOCKER_AI_CONFIG_PREFIX = "application/vnd.docker.ai.model.config";
const DOCKER_AI_PREFIX = "application/vnd.docker.ai.";
export const KITOPS_CONFIG = "application/vnd.kitops.modelkit.config.v1+json";
const KITOPS_PREFIX = "application/vnd.kitops.modelkit.";
const MP_PREFIX = "application/vnd.cncf.model.";

/** Whose artifact a manifest is, by its artifactType and config media type; undefined: none cake reads this way. */
export type ModelArtifactKind = "modelpack" | "docker" | "kitops";

export function modelArtifactKind(m: { artifactType?: string; config: { mediaType: string } }): ModelArtifactKind | undefined {
  const config = m.config.mediaType;
  if (m.artifactType === MP.artifactType || config === MP.config) return "modelpack";
  if (config.startsWith(DOCKER_AI_CONFIG_PREFIX)) return "docker";
  if (config === KITOPS_CONFIG) return "kitops";
  return undefined;
}

/** How a layer's bytes hold its files: one file as it is, or a tar (compressed or not). */
export type LayerForm = "raw" | "tar" | "tar+gzip" | "tar+zstd";

/** The form of a layer by its media type's suffix (`.tar`, `.tar+gzip`, `.tar+zstd`; anything else one raw file). */
export function layerForm(mediaType: string): LayerForm {
  if (/[.+]tar$/.test(mediaType)) return "tar";
  if (/[.+]tar\+gzip$/.test(mediaType) || /\.tar\.gz(ip)?$/.test(mediaType)) return "tar+gzip";
  if (/[.+]tar\+zstd$/.test(mediaType)) return "tar+zstd";
  return "raw";
}

/** Whether a layer holds model weights (an artifact without any is refused: there is no model in it). */
export function isWeightLayer(mediaType: string): boolean {
  if (mediaType.startsWith(MP_PREFIX)) return mediaType.startsWith(`${MP_PREFIX}weight.v1.`);
  if (mediaType.startsWith(KITOPS_PREFIX)) return /^application\/vnd\.kitops\.modelkit\.(model|modelpart)\.v1\./.test(mediaType);
  if (mediaType.startsWith(DOCKER_AI_PREFIX)) return /^application\/vnd\.docker\.ai\.(gguf|safetensors|dduf|model\.file)/.test(mediaType);
  return false;
}

/**
 * The file name of a Docker Model Runner layer that carries no path annotation (its first artifacts
 * named none): what `docker model` itself writes for it. Undefined for other types.
 */
export function dockerDefaultName(mediaType: string): string | undefined {
  if (!mediaType.startsWith(DOCKER_AI_PREFIX)) return undefined;
  const kind = mediaType.slice(DOCKER_AI_PREFIX.length);
  if (kind.startsWith("gguf")) return "model.gguf";
  if (kind === "license") return "LICENSE";
  if (kind.startsWith("mmproj")) return "model.mmproj";
  if (kind.startsWith("chat.template")) return "template.jinja";
  if (kind.startsWith("dduf")) return "model.dduf";
  return undefined;
}
