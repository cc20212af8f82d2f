/**
 * Docker's credential store: `~/.docker/config.json` (or `$DOCKER_CONFIG`), read for credentials
 * and written by `login`, with the credential helper it names (`credHelpers`, `credsStore`).
 *
 * Credentials are matched on the exact normalised host, as docker and sigstore-js do: a
 * `config.json` key `https://index.docker.io/v1/` is host `index.docker.io`, and nothing is ever
 * sent to a host it was not stored for.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { CakeError } from "../../errors.js";
import { isDockerHubHost } from "../reference.js";
import { helperErase, helperGet, helperStore } from "./helpers.js";

export interface Credentials {
  username?: string;
  password?: string;
  /** An OAuth2 refresh token (`identitytoken` in config.json, username `<token>` from a helper). */
  identityToken?: string;
  /** Where they came from, for error messages: "--username", "~/.docker/config.json", "docker-credential-x". */
  source: string;
}

/** The docker config directory: the given one, else `$DOCKER_CONFIG`, else `~/.docker`. */
export function dockerConfigDir(dir?: string): string {
  return dir ?? process.env.DOCKER_CONFIG ?? join(homedir(), ".docker");
}

/**
 * The key credentials are stored and matched under: a config.json key or registry host with its
 * scheme and path removed, lowercased; Docker Hub's names all become `index.docker.io`.
 */
export function credentialHost(hostOrKey: string): string {
  let h = hostOrKey.trim().toLowerCase().replace(/^[a-z][a-z0-9+.-]*:\/\//, "");
  const slash = h.indexOf("/");
  if (slash >= 0) h = h.slice(0, slash);
  return isDockerHubHost(h) ? "index.docker.io" : h;
}

/** What docker writes as the server address for a host (Docker Hub keeps its historic URL). */
function serverAddress(host: string): string {
  return credentialHost(host) === "index.docker.io" ? "https://index.docker.io/v1/" : host;
}

interface DockerConfigFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [key: string]: unknown;
}

async function readDockerConfig(file: string): Promise<DockerConfigFile | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CakeError("E_IO", `${file}: cannot read docker config: ${(err as Error).message}`, { cause: err });
  }
  try {
    const parsed = JSON.parse(text.replace(/^\uFEFF/, "")) as unknown;
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not a JSON object");
    return parsed as DockerConfigFile;
  } catch (err) {
    throw new CakeError("E_IO", `${file}: docker config is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

function findKey<T>(map: Record<string, T> | undefined, host: string): string | undefined {
  if (!map || typeof map !== "object") return undefined;
  const want = credentialHost(host);
  return Object.keys(map).find((k) => credentialHost(k) === want);
}

/** The credential helper configured for `host`: `credHelpers[host]`, else `credsStore`; undefined when none. */
function helperFor(config: DockerConfigFile, host: string): string | undefined {
  const helperKey = findKey(config.credHelpers, host);
  const helper = helperKey !== undefined ? config.credHelpers?.[helperKey] : config.credsStore;
  return typeof helper === "string" && helper !== "" ? helper : undefined;
}

/**
 * Credentials for `host` from the docker config: `credHelpers[host]`, else `credsStore`, else
 * `auths[host]` (`auth` = base64 "user:pass", or `username`/`password`, plus `identitytoken`).
 * Undefined when there are none.
 */
export async function lookupCredentials(host: string, opts: { dockerConfig?: string } = {}): Promise<Credentials | undefined> {
  const file = join(dockerConfigDir(opts.dockerConfig), "config.json");
  const config = await readDockerConfig(file);
  if (!config) return undefined;

  const helper = helperFor(config, host);
  if (helper !== undefined) {
    const fromHelper = await helperGet(helper, serverAddress(host));
    if (fromHelper) return fromHelper;
  }

  const key = findKey(config.auths, host);
  const entry = key !== undefined ? config.auths?.[key] : undefined;
  if (!entry || typeof entry !== "object") return undefined;
  const creds: Credentials = { source: file };
  if (typeof entry.auth === "string" && entry.auth !== "") {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) throw new CakeError("E_AUTH", `${file}: auths["${key}"].auth is not base64 "user:password"`);
    creds.username = decoded.slice(0, colon);
    creds.password = decoded.slice(colon + 1);
  } else if (typeof entry.username === "string" && typeof entry.password === "string") {
    creds.username = entry.username;
    creds.password = entry.password;
  }
  if (typeof entry.identitytoken === "string" && entry.identitytoken !== "") creds.identityToken = entry.identitytoken;
  return creds.username !== undefined || creds.identityToken !== undefined ? creds : undefined;
}

/**
 * Stores `username`/`password` for `host` as docker does: with the configured credential helper,
 * else in `config.json` `auths[host].auth` (mode 0600, written to a temp file and renamed, other
 * keys kept). Returns where they went.
 */
export async function storeCredentials(host: string, username: string, password: string, opts: { dockerConfig?: string } = {}): Promise<string> {
  const file = join(dockerConfigDir(opts.dockerConfig), "config.json");
  const config = (await readDockerConfig(file)) ?? {};
  const helper = helperFor(config, host);
  if (helper !== undefined) {
    await helperStore(helper, serverAddress(host), username, password);
    return `docker-credential-${helper}`;
  }
  const auths = config.auths && typeof config.auths === "object" ? config.auths : {};
  const key = findKey(auths, host) ?? serverAddress(host);
  const { identitytoken: _dropped, ...kept } = auths[key] ?? {};
  auths[key] = { ...kept, auth: Buffer.from(`${username}:${password}`).toString("base64") };
  delete auths[key].username;
  delete auths[key].password;
  config.auths = auths;
  await writeFileAtomic(file, `${JSON.stringify(config, null, "\t")}\n`);
  return file;
}

/**
 * Removes what `storeCredentials` stored for `host` (`docker logout`): from its credential helper,
 * else `config.json`'s `auths` entry (other keys kept). Returns where they were; undefined if nowhere.
 */
export async function eraseCredentials(host: string, opts: { dockerConfig?: string } = {}): Promise<string | undefined> {
  const file = join(dockerConfigDir(opts.dockerConfig), "config.json");
  const config = await readDockerConfig(file);
  if (!config) return undefined;
  const helper = helperFor(config, host);
  if (helper !== undefined && (await helperErase(helper, serverAddress(host)))) return `docker-credential-${helper}`;
  const key = findKey(config.auths, host);
  if (key === undefined) return undefined;
  delete config.auths![key];
  await writeFileAtomic(file, `${JSON.stringify(config, null, "\t")}\n`);
  return file;
}

/** Writes a private file whole or not at all: temp file (0600), fsync, rename over the target. */
async function writeFileAtomic(file: string, text: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    const fh = await open(tmp, "wx", 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new CakeError("E_IO", `${file}: cannot write docker config: ${(err as Error).message}`, { cause: err });
  }
}
