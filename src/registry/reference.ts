/**
 * Registry references: `host[:port]/repo[:tag][@sha256:…]`, read the way docker and oras read
 * them (distribution's `reference` grammar, https://github.com/distribution/reference), plus the
 * one decision that follows from the host: plain HTTP for loopback, HTTPS for everything else.
 */
import { CakeError } from "../errors.js";

export interface RegistryRef {
  /** Host and optional port; Docker Hub is `registry-1.docker.io`. */
  registry: string;
  repository: string;
  tag?: string;
  /** Wins over `tag` when both are given. */
  digest?: string;
}

/** The host Docker Hub's API answers on. `docker.io` and `index.docker.io` are names for it. */
export const DOCKER_HUB = "registry-1.docker.io";
const DOCKER_HUB_ALIASES = new Set(["docker.io", "index.docker.io", DOCKER_HUB]);

/** True for each of Docker Hub's names (lowercase host, no port): `docker.io`, `index.docker.io`, `registry-1.docker.io`. */
export const isDockerHubHost = (host: string): boolean => DOCKER_HUB_ALIASES.has(host);

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const DOMAIN_LABEL = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const HOST = new RegExp(`^(?:${DOMAIN_LABEL}(?:\\.${DOMAIN_LABEL})*|\\[[0-9a-fA-F:.]+\\])(?::([0-9]{1,5}))?$`);
const MAX_REPOSITORY = 255;

export const isDigest = (s: string): boolean => DIGEST.test(s);
export const isTag = (s: string): boolean => TAG.test(s);

/** Parses `host[:port]/repo[:tag][@digest]`; throws E_REF naming the reference and what is wrong. */
export function parseReference(s: string): RegistryRef {
  const bad = (what: string) => new CakeError("E_REF", `${s || '""'}: ${what}`);
  if (s.length === 0) throw bad("empty reference");
  if (/\s/.test(s)) throw bad("reference contains whitespace");

  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(`digest "${digest}" is not sha256:<64 lowercase hex digits>`);
  }

  // A tag is whatever follows the last ':' that comes after the last '/' (a ':' before it is a port).
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) {
      throw bad(tag === "" ? "empty tag" : `tag "${tag}" is not [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`);
    }
  }

  let registry: string;
  let repository: string;
  const slash = rest.indexOf("/");
  const first = slash >= 0 ? rest.slice(0, slash) : "";
  if (slash >= 0 && (first.includes(".") || first.includes(":") || first === "localhost")) {
    registry = first;
    repository = rest.slice(slash + 1);
    const m = HOST.exec(registry);
    if (!m) throw bad(`"${registry}" is not a valid registry host`);
    if (m[1] !== undefined && (Number(m[1]) < 1 || Number(m[1]) > 65535)) throw bad(`port ${m[1]} out of range`);
    registry = registry.toLowerCase();
  } else {
    registry = DOCKER_HUB;
    repository = rest;
  }
  if (isDockerHubHost(registry)) {
    registry = DOCKER_HUB;
    if (repository !== "" && !repository.includes("/")) repository = `library/${repository}`;
  }

  checkRepository(repository, bad);
  const ref: RegistryRef = { registry, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

function checkRepository(repository: string, bad: (what: string) => CakeError): void {
  if (repository === "") throw bad("missing repository name");
  if (repository.length > MAX_REPOSITORY) throw bad(`repository name longer than ${MAX_REPOSITORY} characters`);
  for (const component of repository.split("/")) {
    if (component === "") throw bad(`repository "${repository}" has an empty path component`);
    if (!COMPONENT.test(component)) {
      throw bad(
        component !== component.toLowerCase()
          ? `repository "${repository}" must be lowercase`
          : `repository component "${component}" must be lowercase letters and digits separated by ".", "_", "__" or "-"`,
      );
    }
  }
}

/** Throws E_REF unless `repository` is a valid repository name (used before building any URL). */
export function assertRepository(repository: string, registry?: string): void {
  checkRepository(repository, (what) => new CakeError("E_REF", `${registry ? `${registry}/` : ""}${repository}: ${what}`));
}

/** Throws E_REF unless `reference` is a tag or a sha256 digest. */
export function assertTagOrDigest(reference: string, context: string): void {
  if (reference.includes(":") ? !DIGEST.test(reference) : !TAG.test(reference)) {
    throw new CakeError("E_REF", `${context}: "${reference}" is neither a tag nor a sha256 digest`);
  }
}

/** Throws E_REF unless `digest` is `sha256:<64 hex>`. */
export function assertDigest(digest: string, context: string): void {
  if (!DIGEST.test(digest)) throw new CakeError("E_REF", `${context}: "${digest}" is not a sha256 digest`);
}

/** The inverse of parseReference: `registry/repository[:tag][@digest]`. */
export function formatReference(ref: RegistryRef): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ""}${
    ref.digest !== undefined ? `@${ref.digest}` : ""
  }`;
}

/** True for hosts spoken to over plain HTTP by default: localhost, 127.0.0.0/8 and ::1 (any port). */
export function isPlainHttpHost(registry: string): boolean {
  let host = registry.toLowerCase();
  if (host.startsWith("[")) host = host.slice(1, host.indexOf("]") >= 0 ? host.indexOf("]") : undefined);
  else if (host.split(":").length === 2) host = host.slice(0, host.indexOf(":"));
  if (host === "localhost" || host === "::1" || host === "0:0:0:0:0:0:0:1") return true;
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  return m !== null && m.slice(1).every((o) => Number(o) <= 255);
}
