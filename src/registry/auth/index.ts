/**
 * Registry authentication: where credentials come from (explicit, docker's config.json, docker
 * credential helpers), how a registry asks for them (`WWW-Authenticate`), the Bearer token dance
 * of the distribution token spec, and `login`.
 */
export { credentialHost, dockerConfigDir, eraseCredentials, lookupCredentials, type Credentials } from "./docker-config.js";
export { Authenticator, DEFAULT_TOKEN_SECONDS, parseWWWAuthenticate, type AuthenticatorOptions, type Challenge } from "./challenge.js";
export { mergeScopes, repositoryScope } from "./scope.js";
export { login, type LoginOptions } from "./login.js";
