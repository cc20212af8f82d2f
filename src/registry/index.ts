/**
 * The OCI distribution client: references, credentials and the registry API of one host.
 * Everything outside src/registry imports from here.
 */
export {
  DOCKER_HUB,
  formatReference,
  isDigest,
  isPlainHttpHost,
  isTag,
  parseReference,
  type RegistryRef,
} from "./reference.js";
export { RegistryError, errorCodeFor, parseOciErrors, type OciErrorEntry } from "./errors.js";
export {
  credentialHost,
  dockerConfigDir,
  eraseCredentials,
  login,
  lookupCredentials,
  parseWWWAuthenticate,
  type Challenge,
  type Credentials,
  type LoginOptions,
} from "./auth/index.js";
export {
  MEDIA_TYPE,
  REGISTRY_DEFAULTS,
  RegistryClient,
  type BlobDescriptor,
  type FetchedBlob,
  type PushBlobOptions,
  type PushBlobResult,
  type RegistryClientOptions,
} from "./client.js";
