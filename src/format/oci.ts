/**
 * OCI image-spec types cake writes and reads (https://github.com/opencontainers/image-spec),
 * and the media types of cake's model artifact (docs/format.md is the contract).
 */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export const MT = {
  manifest: "application/vnd.oci.image.manifest.v1+json",
  index: "application/vnd.oci.image.index.v1+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  empty: "application/vnd.oci.empty.v1+json",
  // cake's own
  artifact: "application/vnd.cake.model.v1",
  config: "application/vnd.cake.model.config.v1+json",
  recipe: "application/vnd.cake.recipe.v1+json",
  /** An index artifact: a revision's config and recipe only, tagged by commit (src/model/index-artifact.ts). */
  modelIndex: "application/vnd.cake.model.index.v1+json",
  tensor: "application/vnd.cake.tensor.v1.raw",
  pack: "application/vnd.cake.tensor-pack.v1.raw",
  // CNCF ModelPack layer types, for whole non-tensor files only (see docs/format.md)
  mpWeight: "application/vnd.cncf.model.weight.v1.raw",
  mpWeightConfig: "application/vnd.cncf.model.weight.config.v1.raw",
  mpDoc: "application/vnd.cncf.model.doc.v1.raw",
  mpCode: "application/vnd.cncf.model.code.v1.raw",
} as const;

/**
 * The largest manifest (or index) cake reads or writes, in the store and on registries:
 * distribution's own limit (4 MiB), so whatever cake stores, a registry accepts.
 */
export const MANIFEST_LIMIT = 4 << 20;

export const ANN = {
  title: "org.opencontainers.image.title",
  refName: "org.opencontainers.image.ref.name",
  source: "org.opencontainers.image.source",
  revision: "org.opencontainers.image.revision",
  mpFilepath: "org.cncf.model.filepath",
  /** cake's full reference of a manifest in the store index (e.g. hf://acme/tiny-llama@main). */
  cakeRef: "dev.cake.ref",
  hfRepo: "dev.cake.hf.repo",
  hfCommit: "dev.cake.hf.commit",
  /**
   * On a store tag only (index.json): a Hub reference that came from an archive (`cake load`) and
   * that the Hub has not confirmed yet; its value says where it came from. `cake pull` checks it.
   */
  hfUnverified: "dev.cake.hf.unverified",
} as const;

export const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export const hexOf = (digest: string) => digest.slice("sha256:".length);
