/**
 * The real Backend of `cake browse`: the store, the Hub and (optionally) one registry, through the
 * library's public entry only. Sharing is computed from manifests and configs: two models share a
 * blob when both manifests list its digest, and a tensor when both hold the same bytes (identityIn:
 * its own sha256, or, in an older config, the same place in the same blob; what `cake diff` counts
 * as shared).
 */
import path from "node:path";
import {
  CakeError,
  DOCUMENT_LIMIT,
  MANIFEST_LIMIT,
  MT,
  clientFor,
  diffModels,
  exportTo,
  formatBytes,
  identityIn,
  isCakeError,
  isHfRef,
  listFiles,
  modelInfo,
  parseHfRef,
  parseConfig,
  parseManifest,
  parseReference,
  pullFromRegistry,
  pullHf,
  readConfig,
  removeModel,
  sourceFromStore,
  type HubParams,
  type ImageManifest,
  type ModelConfig,
  type ProgressSink,
  type RegistryAccess,
  type Store,
} from "../../src/index.js";
import { DEFAULT_SEARCH_LIMIT, hubFlags, searchHub, searchRegistry } from "../commands/search.js";
import type { Backend, DetailTensor, LocalModel, ModelDetail, RemoteHit } from "./types.js";

export interface BackendOptions {
  store: Store;
  hub: HubParams;
  /** `host[:port]` (catalog) or `host[:port]/repo` (its tags) searched next to the Hub. */
  registry?: string;
  access?: RegistryAccess;
  limit?: number;
}

/** `hf://org/name@rev` -> [`hf://org/name`, `rev`]; `host/repo:tag` -> [`host/repo`, `tag`]; digests and commits shortened. */
export function splitRef(ref: string): { name: string; revision: string; pinned: boolean } {
  if (isHfRef(ref)) {
    const at = ref.indexOf("@");
    const name = at < 0 ? ref : ref.slice(0, at);
    const rev = at < 0 ? "main" : ref.slice(at + 1);
    const pinned = /^[a-f0-9]{40}$/.test(rev);
    return { name, revision: pinned ? rev.slice(0, 12) : rev, pinned };
  }
  const at = ref.indexOf("@");
  if (at >= 0) return { name: ref.slice(0, at), revision: ref.slice(at + 1, at + 1 + 19), pinned: true };
  const colon = ref.lastIndexOf(":");
  if (colon > ref.lastIndexOf("/")) return { name: ref.slice(0, colon), revision: ref.slice(colon + 1), pinned: false };
  return { name: ref, revision: "latest", pinned: false };
}

interface Entry {
  model: LocalModel;
  manifest?: ImageManifest;
  config?: ModelConfig;
}

/** Every model of the store, grouped by manifest, with the bytes each shares with the others. */
export async function indexStore(store: Store): Promise<Entry[]> {
  const groups = new Map<string, string[]>();
  for (const t of await store.tags()) groups.set(t.descriptor.digest, [...(groups.get(t.descriptor.digest) ?? []), t.ref]);
  const entries: Entry[] = [];
  for (const [digest, refs] of groups) {
    // branches and tags first, then commits and digests
    refs.sort((a, b) => Number(splitRef(a).pinned) - Number(splitRef(b).pinned) || a.localeCompare(b));
    let manifest: ImageManifest | undefined;
    try {
      manifest = parseManifest(await store.readBlob(digest, MANIFEST_LIMIT), `${refs[0]} manifest`);
    } catch {
      manifest = undefined; // listed, but not readable as a model: shown without sizes
    }
    const config = await readConfig(store, digest);
    const split = refs.map(splitRef);
    const primary = refs[split.findIndex((s) => !s.pinned)] ?? refs[0]!;
    const commit = config?.source.type === "hf" ? config.source.commit : undefined;
    entries.push({
      manifest,
      config,
      model: {
        digest,
        name: splitRef(primary).name,
        ref: primary,
        refs,
        revisions: [...new Set(split.filter((s) => !s.pinned).map((s) => s.revision)), ...split.filter((s) => s.pinned).map((s) => s.revision)],
        ...(commit ? { commit } : {}),
        files: config?.files.length ?? 0,
        tensors: config?.files.reduce((n, f) => n + (f.tensors?.length ?? 0), 0) ?? 0,
        bytes: config?.files.reduce((n, f) => n + f.size, 0) ?? 0,
        sharedBytes: 0,
        sharedWith: [],
      },
    });
  }
  const users = new Map<string, Set<Entry>>();
  for (const e of entries) for (const l of e.manifest?.layers ?? []) (users.get(l.digest) ?? users.set(l.digest, new Set()).get(l.digest)!).add(e);
  for (const e of entries) {
    const seen = new Set<string>();
    const with_ = new Set<string>();
    for (const l of e.manifest?.layers ?? []) {
      if (seen.has(l.digest)) continue;
      seen.add(l.digest);
      const others = [...users.get(l.digest)!].filter((o) => o !== e);
      if (others.length === 0) continue;
      e.model.sharedBytes += l.size;
      for (const o of others) with_.add(o.model.ref);
    }
    e.model.sharedWith = [...with_].sort();
  }
  return entries.sort((a, b) => a.model.name.localeCompare(b.model.name) || a.model.ref.localeCompare(b.model.ref));
}

/** The tensors of a config, each with the local models (other than `self`) that hold the same bytes. */
function tensorsOf(config: ModelConfig, manifest: ImageManifest | undefined, entries: Entry[], self?: string): DetailTensor[] {
  const holders = new Map<string, string[]>();
  for (const e of entries) {
    if (e.model.digest === self) continue;
    const identity = identityIn(e.manifest);
    for (const f of e.config?.files ?? []) for (const t of f.tensors ?? []) {
      const k = identity(t);
      const list = holders.get(k) ?? holders.set(k, []).get(k)!;
      if (!list.includes(e.model.ref)) list.push(e.model.ref);
    }
  }
  const identity = identityIn(manifest);
  return config.files.flatMap((f) =>
    (f.tensors ?? []).map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, size: t.size, file: f.path, sharedWith: holders.get(identity(t)) ?? [] })),
  );
}

const filesOf = (config: ModelConfig) =>
  config.files.map((f) => ({ path: f.path, size: f.size, format: f.format, ...(f.tensors ? { tensors: f.tensors.length } : {}) }));

function sharingLine(tensors: DetailTensor[]): string {
  const shared = tensors.filter((t) => t.sharedWith.length > 0);
  if (shared.length === 0) return "shares no tensor with another local model";
  const bytes = shared.reduce((n, t) => n + t.size, 0);
  return `shares ${shared.length} of ${tensors.length} tensors (${formatBytes(bytes)}) with other local models`;
}

export function libraryBackend(opts: BackendOptions): Backend {
  const { store, hub } = opts;
  const access = opts.access ?? {};
  const limit = opts.limit ?? DEFAULT_SEARCH_LIMIT;

  async function registryDetail(ref: string, entries: Entry[]): Promise<ModelDetail> {
    const r = parseReference(ref);
    const client = clientFor(r.registry, access);
    const m = await client.getManifest(r.repository, r.digest ?? r.tag ?? "latest");
    const manifest = parseManifest(m.bytes, `${ref} manifest`);
    const summary = [`manifest ${m.digest}`, `${manifest.layers.length} layers, ${formatBytes(manifest.layers.reduce((n, l) => n + l.size, 0))}`];
    if (manifest.config.mediaType !== MT.config) {
      return { ref, where: "registry", summary, files: [], note: `not a cake model (config ${manifest.config.mediaType})` };
    }
    const bytes = await client.readBlob(r.repository, manifest.config.digest, DOCUMENT_LIMIT);
    const config = parseConfig(bytes, `${ref} config`);
    const have = new Set(entries.flatMap((e) => e.manifest?.layers.map((l) => l.digest) ?? []));
    const missing = manifest.layers.filter((l) => !have.has(l.digest)).reduce((n, l) => n + l.size, 0);
    const tensors = tensorsOf(config, manifest, entries);
    summary.push(`${sharingLine(tensors)}; a pull fetches ${formatBytes(missing)}`);
    return { ref, where: "registry", summary, files: filesOf(config), tensors };
  }

  async function hubDetail(hit: RemoteHit): Promise<ModelDetail> {
    const { repo, revision } = parseHfRef(hit.ref);
    const info = await modelInfo(hub, repo, revision);
    const files = [];
    for await (const f of listFiles(hub, repo, info.sha)) {
      files.push({ path: f.path, size: f.size, ...(f.path.endsWith(".safetensors") ? { format: "safetensors" as const } : {}) });
    }
    const total = files.reduce((n, f) => n + f.size, 0);
    const facts = [
      hit.downloads !== undefined ? `${hit.downloads} downloads` : "",
      hit.likes !== undefined ? `${hit.likes} likes` : "",
      hit.pipelineTag ?? "",
      hit.flags ?? "",
    ].filter(Boolean);
    return {
      ref: hit.ref,
      where: "hub",
      summary: [`commit ${info.sha}`, `${files.length} files, ${formatBytes(total)}`, ...(facts.length ? [facts.join(", ")] : [])],
      files,
      note: "tensors, dtypes and shapes show once pulled (press p)",
    };
  }

  return {
    describe: () => ({ store: store.root, hub: hub.hubUrl, ...(opts.registry ? { registry: opts.registry } : {}) }),

    async local() {
      return (await indexStore(store)).map((e) => e.model);
    },

    async search(query) {
      const hits: RemoteHit[] = [];
      const errors: string[] = [];
      const [h, r] = await Promise.allSettled([
        searchHub(hub, query, { limit }),
        opts.registry ? searchRegistry(opts.registry, query, access, { limit }) : Promise.resolve([]),
      ]);
      if (h.status === "fulfilled") {
        for (const m of h.value) {
          const flags = hubFlags(m);
          hits.push({
            source: "hub",
            ref: `hf://${m.id}`,
            downloads: m.downloads,
            likes: m.likes,
            ...(m.lastModified ? { updated: m.lastModified } : {}),
            ...(m.pipelineTag ? { pipelineTag: m.pipelineTag } : {}),
            ...(flags ? { flags } : {}),
          });
        }
      } else errors.push(`Hub: ${message(h.reason)}`);
      if (r.status === "fulfilled") {
        for (const repo of r.value) for (const tag of repo.tags) hits.push({ source: "registry", ref: `${repo.ref}:${tag}` });
      } else errors.push(`${opts.registry}: ${message(r.reason)}`);
      return { hits, errors };
    },

    async detail(target) {
      const entries = await indexStore(store);
      if (target.kind === "local") {
        const e = entries.find((x) => x.model.digest === target.model.digest);
        if (!e) throw new CakeError("E_NOT_FOUND", `${target.model.ref}: no longer in the store`);
        const m = e.model;
        const summary = [
          [m.commit ? `commit ${m.commit}` : "", `manifest ${m.digest}`].filter(Boolean).join("  "),
          `${m.files} files, ${m.tensors} tensors, ${formatBytes(m.bytes)}`,
        ];
        if (m.refs.length > 1) summary.push(`also named ${m.refs.filter((r) => r !== m.ref).join(", ")}`);
        if (!e.config) return { ref: m.ref, where: "store", summary, files: [], note: "no cake model config in this manifest" };
        const tensors = tensorsOf(e.config, e.manifest, entries, m.digest);
        summary.push(sharingLine(tensors));
        return { ref: m.ref, where: "store", summary, files: filesOf(e.config), tensors };
      }
      return target.hit.source === "hub" ? hubDetail(target.hit) : registryDetail(target.hit.ref, entries);
    },

    async pull(ref, progress: ProgressSink) {
      if (isHfRef(ref)) {
        const r = await pullHf(parseHfRef(ref), { store, hub, progress });
        return { text: r.upToDate ? `${r.ref}: up to date (${r.commit.slice(0, 12)})` : `${r.ref}: pulled commit ${r.commit.slice(0, 12)}`, ref: r.ref };
      }
      const r = await pullFromRegistry(ref, { store, progress, ...access });
      return { text: `${r.ref}: ${r.blobs - r.stats.skippedBlobs} of ${r.blobs} blobs fetched (${formatBytes(r.stats.fetchedBytes)})`, ref: r.ref };
    },

    async export(ref, dir, progress) {
      const src = await sourceFromStore(store, ref);
      const out = path.resolve(dir);
      await exportTo(src, out, { progress });
      return { text: `${ref}: ${src.recipe.files.length} files written to ${out}, each checked against its sha256` };
    },

    async remove(model) {
      const removed: string[] = [];
      for (const ref of model.refs) {
        try {
          removed.push(...(await removeModel(store, ref)));
        } catch (err) {
          if (!isCakeError(err, "E_NOT_FOUND")) throw err; // already gone with another ref
        }
      }
      return { text: `removed ${removed.join(", ")} (blobs stay until cake gc)` };
    },

    diff: (a, b) => diffModels(a, b, store, access),
  };
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));
