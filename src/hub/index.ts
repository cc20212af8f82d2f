export * from "./config.js";
export * from "./model-info.js";
export * from "./list-files.js";
export * from "./file-reader.js";
export { hubError } from "./errors.js";
