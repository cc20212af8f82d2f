/**
 * CNCF ModelPack's media types and annotation keys (https://github.com/modelpack/model-spec,
 * docs/spec.md and specs-go/v1): the artifact a ModelPack tool (modctl, KitOps, Docker Model Runner,
 * modelpack-client) reads — one whole file per layer, at the path its `org.cncf.model.filepath` names.
 * The raw layer types are the ones cake's own artifact already uses for whole non-tensor files (MT in
 * format/oci.ts).
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
