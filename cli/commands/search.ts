import { Command, Option } from "commander";
import { CakeError, clientFor, isCakeError, parseReference, searchModels, type HubModelHit, type HubModelSort, type HubParams, type RegistryAccess } from "../../src/index.js";
import { accessFrom, hub, parsePositiveInt, say, withRegistryOptions, type AccessOpts } from "../context.js";
import { printJson, table } from "../output.js";

/** A repository of a registry and its tags: what `cake search --registry` finds. */
export interface RegistryHit {
  registry: string;
  repository: string;
  /** `host/repository`: add `:tag` to pull it. */
  ref: string;
  tags: string[];
}

export const DEFAULT_SEARCH_LIMIT = 20;

/** Hub models whose id contains `query`, most downloaded first unless `sort` says otherwise. */
export async function searchHub(params: HubParams, query: string, opts: { limit?: number; author?: string; sort?: HubModelSort } = {}): Promise<HubModelHit[]> {
  const out: HubModelHit[] = [];
  const search = { search: query, limit: opts.limit ?? DEFAULT_SEARCH_LIMIT, ...(opts.author ? { author: opts.author } : {}), ...(opts.sort ? { sort: opts.sort } : {}) };
  for await (const m of searchModels(params, search)) out.push(m);
  return out;
}

/**
 * Repositories of a registry whose name contains `query` (its catalog, where it offers one), each
 * with its tags. `target` is `host[:port]`, or `host[:port]/repository` to list that repository's
 * tags without the catalog.
 */
export async function searchRegistry(target: string, query: string, access: RegistryAccess, opts: { limit?: number } = {}): Promise<RegistryHit[]> {
  const limit = opts.limit ?? DEFAULT_SEARCH_LIMIT;
  let registry: string;
  let repositories: string[] = [];
  if (target.includes("/")) {
    const r = parseReference(target);
    registry = r.registry;
    repositories = [r.repository];
  } else {
    const probe = parseReference(`${target}/cake-probe`);
    if (probe.repository !== "cake-probe") throw new CakeError("E_REF", `${target}: not a registry host with a catalog (want host[:port], e.g. 127.0.0.1:5000)`);
    registry = probe.registry;
  }
  const client = clientFor(registry, access);
  if (repositories.length === 0) {
    const needle = query.toLowerCase();
    for await (const repo of client.catalog({ pageSize: 1000 })) {
      if (!repo.toLowerCase().includes(needle)) continue;
      repositories.push(repo);
      if (repositories.length >= limit) break;
    }
  }
  const hits: RegistryHit[] = [];
  for (const repository of repositories) {
    let tags: string[];
    try {
      tags = await client.listTags(repository);
    } catch (err) {
      // A name the registry lists but will not describe (or one cake refuses) is left out, not fatal.
      if (repositories.length > 1 && isCakeError(err) && err.code !== "E_NETWORK") continue;
      throw err;
    }
    hits.push({ registry: client.registry, repository, ref: `${client.registry}/${repository}`, tags });
  }
  return hits;
}

// Made on first use: ICU's compact-notation data takes ~30 ms to load, which every command paid at import.
let compact: Intl.NumberFormat | undefined;
export const formatCount = (n: number) => (compact ??= new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 })).format(n);
export const formatDay = (iso?: string) => (iso && /^\d{4}-\d{2}-\d{2}/.test(iso) ? iso.slice(0, 10) : "-");
export const hubFlags = (m: HubModelHit) => [m.private ? "private" : "", m.gated ? "gated" : ""].filter(Boolean).join(",");

export function searchCommand(): Command {
  const cmd = new Command("search")
    .description("find models: on the Hub (HF_ENDPOINT), or in a registry's catalog with --registry")
    .argument("[query]", "part of the model id (Hub) or repository name (registry)", "")
    .option("-n, --limit <n>", `at most this many models (default ${DEFAULT_SEARCH_LIMIT})`, parsePositiveInt)
    .option("--author <org>", "Hub: only models of this user or organization")
    .addOption(new Option("--sort <field>", "Hub: most first by").choices(["downloads", "likes", "lastModified", "createdAt", "trendingScore"]))
    .option("--registry <host[/repo]>", "search a registry's catalog instead (host[:port]), or list a repository's tags (host[:port]/repo)")
    .option("--json", "machine-readable output")
    .option("-q, --quiet", "no status lines");
  return withRegistryOptions(cmd).action(
    async (query: string, opts: AccessOpts & { limit?: number; author?: string; sort?: HubModelSort; registry?: string; json?: boolean; quiet?: boolean }) => {
      if (opts.registry) {
        if (opts.author || opts.sort) throw new CakeError("E_USAGE", "--author and --sort are Hub options; a registry search matches repository names only");
        const hits = await searchRegistry(opts.registry, query, await accessFrom(opts), { ...(opts.limit ? { limit: opts.limit } : {}) });
        if (opts.json) return printJson(hits);
        if (hits.length === 0) return say(opts, `no repository in ${opts.registry} matches ${JSON.stringify(query)}`);
        table([["REPOSITORY", "TAGS"], ...hits.map((h) => [h.ref, h.tags.length > 0 ? h.tags.join(", ") : "-"])]);
        return;
      }
      const hits = await searchHub(hub(), query, opts);
      if (opts.json) return printJson(hits);
      if (hits.length === 0) return say(opts, `no model on ${hub().hubUrl} matches ${JSON.stringify(query)}`);
      table([
        ["ID", "DOWNLOADS", "LIKES", "UPDATED", "TASK"],
        ...hits.map((m) => [`${m.id}${hubFlags(m) ? ` (${hubFlags(m)})` : ""}`, formatCount(m.downloads), formatCount(m.likes), formatDay(m.lastModified), m.pipelineTag ?? "-"]),
      ]);
    },
  );
}
