/** `cake login`: credentials checked against the registry, then stored where docker keeps them. */
import type { Dispatcher } from "undici";
import { CakeError } from "../../errors.js";
import { header, httpRequest } from "../../http/request.js";
import { registryError, urlish } from "../errors.js";
import { DOCKER_HUB, isPlainHttpHost } from "../reference.js";
import { Authenticator } from "./challenge.js";
import { credentialHost, storeCredentials } from "./docker-config.js";

export interface LoginOptions {
  /** Docker config directory (default `$DOCKER_CONFIG` or `~/.docker`). */
  dockerConfig?: string;
  plainHttp?: boolean;
  userAgent?: string;
  dispatcher?: Dispatcher;
}

/**
 * Checks `username`/`password` against the registry's `/v2/` (through its token server if it has
 * one) and stores them as docker does (`storeCredentials`). Returns where they went.
 */
export async function login(registry: string, username: string, password: string, opts: LoginOptions = {}): Promise<{ storedIn: string }> {
  const host = registry.toLowerCase();
  const apiHost = credentialHost(host) === "index.docker.io" ? DOCKER_HUB : host;
  const base = `${opts.plainHttp ?? isPlainHttpHost(apiHost) ? "http" : "https"}://${apiHost}/v2/`;
  const auth = new Authenticator({
    registry: host,
    credentials: async () => ({ username, password, source: "login" }),
    userAgent: opts.userAgent,
    dispatcher: opts.dispatcher,
  });
  const get = async (authorization?: string) => {
    try {
      return await httpRequest(base, {
        headers: { "user-agent": opts.userAgent ?? "cake", ...(authorization ? { authorization } : {}) },
        dispatcher: opts.dispatcher,
      });
    } catch (err) {
      throw new CakeError("E_NETWORK", `${host}: GET ${urlish(base)}: ${(err as Error).message}`, { cause: err });
    }
  };
  let res = await get();
  if (res.status === 401) {
    const www = res.headers["www-authenticate"];
    await res.body.dump();
    const authorization = await auth.challenge(www, [], undefined);
    if (!authorization) throw new CakeError("E_AUTH", `${host}: login: the registry asks for an authentication scheme cake does not speak (${header(res.headers, "www-authenticate") ?? "none"})`);
    res = await get(authorization);
  }
  if (res.status !== 200) {
    const hint = res.status === 401 || res.status === 403 ? `credentials for user "${username}" were not accepted` : undefined;
    throw await registryError(res, "GET", base, `${host}: login`, hint);
  }
  await res.body.dump();
  return { storedIn: await storeCredentials(host, username, password, { dockerConfig: opts.dockerConfig }) };
}
