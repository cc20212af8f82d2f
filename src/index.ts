/** cake's library: the one entry cli/ and proxy/ import. */
export { CakeError, isCakeError, oneLine } from "./errors.js";
export * from "./format/safetensors.js";
export * from "./format/oci.js";
export * from "./format/paths.js";
export * from "./format/plan.js";
export * from "./format/artifact.js";
export * from "./format/recipe.js";
export { Store, defaultStoreDir, type Tag } from "./store/layout.js";
export * from "./transfer/engine.js";
export * from "./transfer/progress.js";
export * from "./transfer/defaults.js";
export * from "./hub/index.js";
export * from "./model/ref.js";
export * from "./model/hf-pull.js";
export * from "./model/source.js";
export * from "./model/export.js";
export * from "./model/catalog.js";
export { closeSharedDispatcher } from "./http/agent.js";
