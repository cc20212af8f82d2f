/**
 * Listings that follow `Link: <…>; rel="next"` (src/http/paginate.ts): the tags of a repository
 * (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-tags) and the
 * registry's catalog of repositories (distribution's own API).
 */
import { CakeError } from "../errors.js";
import { followPages } from "../http/paginate.js";
import { REGISTRY_DEFAULTS } from "./options.js";
import { assertRepository } from "./reference.js";
import type { RegistryTransport } from "./transport.js";

/** The token scope distribution asks for on `GET /v2/_catalog`. */
const CATALOG_SCOPE = "registry:catalog:*";

/** Tags of a repository, page by page, following `Link: <…>; rel="next"`. */
export async function* tags(t: RegistryTransport, repo: string, opts: { pageSize?: number } = {}): AsyncGenerator<string> {
  const ctx = t.context(repo);
  assertRepository(repo, t.registry);
  const first = t.url(repo, `tags/list${opts.pageSize ? `?n=${opts.pageSize}` : ""}`);
  const read = async (url: string) => {
    const res = await t.sendRead(url, { method: "GET", scopes: t.pullScopes(repo), context: ctx }, REGISTRY_DEFAULTS.tagsPageLimit, "tag list");
    if (res.status !== 200) throw await t.failRead(res, "GET", url, ctx);
    return { page: res.bytes, link: res.headers.link };
  };
  for await (const body of followPages(first, read, { what: `${ctx}: tag listing`, code: "E_REGISTRY" })) {
    let tags: unknown;
    try {
      tags = (JSON.parse(body.toString("utf8")) as { tags?: unknown }).tags;
    } catch {
      throw new CakeError("E_REGISTRY", `${ctx}: tag list is not JSON`);
    }
    if (tags !== null && tags !== undefined && !(Array.isArray(tags) && tags.every((t) => typeof t === "string"))) {
      throw new CakeError("E_REGISTRY", `${ctx}: tag list "tags" is not an array of strings`);
    }
    for (const t of (tags as string[] | null | undefined) ?? []) yield t;
  }
}

/**
 * Repositories of the registry, page by page, following `Link` (`GET /v2/_catalog`, distribution's
 * catalog API; not part of the OCI spec, so many registries do not offer it). A registry that
 * answers 404, 401/403 or UNSUPPORTED gets one clear CakeError saying so.
 */
export async function* catalog(t: RegistryTransport, opts: { pageSize?: number } = {}): AsyncGenerator<string> {
  const ctx = t.registry;
  const first = `${t.origin}/v2/_catalog${opts.pageSize ? `?n=${opts.pageSize}` : ""}`;
  const read = async (url: string) => {
    const res = await t.sendRead(url, { method: "GET", scopes: [CATALOG_SCOPE], context: ctx }, REGISTRY_DEFAULTS.tagsPageLimit, "catalog");
    if (res.status !== 200) {
      const err = await t.failRead(res, "GET", url, ctx);
      const refused = res.status === 401 || res.status === 403;
      const hint = refused ? `; ${await t.describeCredentials()}` : "";
      if (res.status === 404 || refused || err.errors.some((e) => e.code === "UNSUPPORTED")) {
        throw new CakeError(
          refused ? "E_AUTH" : "E_NOT_FOUND",
          `${ctx}: the registry does not ${refused ? "let you list" : "offer a list of"} its repositories (GET /v2/_catalog: HTTP ${res.status}${hint}); ` +
            `name a repository instead (${ctx}/<repository>)`,
          { cause: err },
        );
      }
      throw err;
    }
    return { page: res.bytes, link: res.headers.link };
  };
  for await (const body of followPages(first, read, { what: `${ctx}: catalog`, code: "E_REGISTRY" })) {
    let repos: unknown;
    try {
      repos = (JSON.parse(body.toString("utf8")) as { repositories?: unknown }).repositories;
    } catch {
      throw new CakeError("E_REGISTRY", `${ctx}: catalog is not JSON`);
    }
    if (repos !== null && repos !== undefined && !(Array.isArray(repos) && repos.every((r) => typeof r === "string"))) {
      throw new CakeError("E_REGISTRY", `${ctx}: catalog "repositories" is not an array of strings`);
    }
    for (const r of (repos as string[] | null | undefined) ?? []) yield r;
  }
}

/** Every tag of a repository, all pages read. */
export async function listTags(t: RegistryTransport, repo: string): Promise<string[]> {
  const out: string[] = [];
  for await (const tag of tags(t, repo)) out.push(tag);
  return out;
}
