export * from "./config.js";
export * from "./model-info.js";
export * from "./list-files.js";
export * from "./file-reader.js";
export { HubError, hubError } from "./errors.js";
export * from "./list-refs.js";
export * from "./file-access.js";
export * from "./search-models.js";
