/** The proxy's public entry (the CLI and tests import this). */
export { createApp, clientToken } from "./app.js";
export { ProxyService, type ServiceOptions, type Conversion } from "./service.js";
export { startProxy, resolveConfig, parseAliases, type ProxyConfig, type RunningProxy } from "./server.js";
export { revisionToTag, tagToRevision } from "./names.js";
