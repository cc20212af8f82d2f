/**
 * OCI archives for air-gapped copies: a tar of an OCI image layout
 * (https://github.com/opencontainers/image-spec/blob/main/image-layout.md) holding chosen models —
 * `oci-layout`, `index.json` (their descriptors, annotations included) and `blobs/sha256/<hex>` for
 * each manifest, config and layer, each digest once. `skopeo copy oci-archive:model.tar …` reads it.
 *
 * Both directions stream: blobs go from the store into the tar and from the tar into the store
 * one chunk at a time, so memory does not grow with the model. Loading verifies every blob against
 * the digest its entry is named for before the blob is visible, and names the store's tags only
 * once every blob each manifest needs is there.
 */
export * from "./archive-save.js";
export * from "./archive-load.js";
export { MAX_ARCHIVE_INDEX } from "./archive-parts.js";
