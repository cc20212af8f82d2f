/**
 * The index artifact of a Hub revision (docs/format.md, "The index artifact"): a small OCI manifest
 * of artifactType `application/vnd.cake.model.index.v1+json` whose config is the revision's cake
 * config and whose one layer is its recipe — no tensor bytes — tagged by commit as
 * `<prefix>/<org>/<name>:<commit>` on any registry. From it a client knows, before reading a byte
 * of the Hub, every file's units and their digests: what its store already holds is not fetched.
 *
 * A `cake proxy`'s `hf/` manifests and its backend's (`--backend`) have the same config and recipe
 * under the same naming, so either serves as an index too: the reader accepts both artifactTypes.
 *
 * An index is a hint, read from a stranger: a missing, unreachable or lying one is one warning line
 * and `undefined` (the caller converts from the Hub as without one), never an error. A lying one
 * can cost bandwidth, not correctness: the caller checks every unit against its digest and every
 * file against the Hub's hashes.
 */
import { CakeError, oneLine } from "../errors.js";
import { DOCUMENT_LIMIT, type ModelConfig, type Recipe } from "../format/artifact.js";
import { ANN, MT, type Descriptor, type ImageManifest } from "../format/oci.js";
import { parseConfig, parseManifest, parseRecipe } from "../format/recipe.js";
import { RegistryError, parseReference } from "../registry/index.js";
import type { Store } from "../store/layout.js";
import { clientFor, type RegistryAccess } from "./registry-pull.js";
import { readStoredManifest } from "./source.js";

/** One unit of a file: its bytes [begin, end) in file coordinates, and the digest of those bytes. */
export interface ModelIndexUnit {
  begin: number;
  end: number;
  digest: string;
}

export interface ModelIndexFile {
  path: string;
  size: number;
  sha256: string;
  gitOid?: string;
  lfs?: true;
  /** In file order; they cover the file but for a safetensors file's header (bytes [0, 8 + N)). */
  units: ModelIndexUnit[];
}

export interface ModelIndex {
  /** The index entry read: `host/prefix/org/name:commit`. */
  ref: string;
  manifestDigest: string;
  /** The layer rule's threshold the units were cut with (planUnits' `threshold`). */
  threshold: number;
  files: ModelIndexFile[];
}

export interface IndexPushOptions extends RegistryAccess {
  store: Store;
  /** The entry's tag (default: the commit; a proxy backend's resume entry is `<commit>-index`). */
  tag?: string;
  /** Cancels the uploads; nothing is tagged after it. */
  signal?: AbortSignal;
}

export interface IndexPushResult {
  ref: string;
  manifestDigest: string;
  /** Bytes of config + recipe + manifest. */
  bytes: number;
}

/**
 * An index is a shortcut: one retry at most, and no long wait a rate limit asks for, so a registry
 * that is down costs a pull a second, not the minute of retries a blob is worth.
 */
const INDEX_RETRY = { retries: 1, maxServerWaitMs: 5_000 };

/** The artifactTypes an index entry may have: an index artifact's, or a whole model artifact's. */
const INDEX_TYPES: ReadonlySet<string | undefined> = new Set([MT.modelIndex, MT.artifact]);

/**
 * Where the index entry of `repo@commit` lies under `prefix` (`host[:port]/path`): the repository
 * path in lower case (OCI names are), tagged by the commit (or `tag`), as the proxy's backend names them.
 */
export function indexReference(prefix: string, repo: string, commit: string, tag = commit) {
  const full = `${prefix.replace(/\/+$/, "")}/${repo.toLowerCase()}:${tag}`;
  const r = parseReference(full);
  return { registry: r.registry, repository: r.repository, tag, full };
}

/** Checks an index prefix (`--index`, CAKE_INDEX) up front: a bad one is a usage error, said once. */
export function checkIndexPrefix(prefix: string, where: string): string {
  const ref = (() => {
    try {
      return parseReference(`${prefix}/org/name`);
    } catch {
      return undefined;
    }
  })();
  if (!ref || ref.tag || ref.digest || !prefix.includes("/")) {
    throw new CakeError("E_USAGE", `${where} ${JSON.stringify(prefix)}: want REGISTRY/prefix (host[:port]/path, no tag), e.g. localhost:5000/index`);
  }
  return prefix.replace(/\/+$/, "");
}

/**
 * `cake index push hf://org/name@rev REGISTRY/prefix`: publishes the index artifact of a revision
 * the store holds (`storeRef` names it by commit or branch) as `<prefix>/<org>/<name>:<commit>`.
 * Config and recipe are uploaded unless there (a few KB to a few MB), then the manifest.
 */
export async function pushModelIndex(storeRef: string, prefix: string, opts: IndexPushOptions): Promise<IndexPushResult> {
  const { store } = opts;
  return store.withLease(async () => {
    const { manifest } = await readStoredManifest(store, storeRef);
    const recipeDesc = recipeLayerOf(manifest, `${storeRef} manifest`);
    const config = parseConfig(await store.readBlob(manifest.config.digest, DOCUMENT_LIMIT), `${storeRef} config`);
    if (config.source.type !== "hf") throw new CakeError("E_USAGE", `${storeRef}: not a Hub revision (an index is per Hub commit)`);
    const { repo, commit } = config.source;
    const ref = indexReference(prefix, repo, commit, opts.tag);
    const index: ImageManifest = {
      schemaVersion: 2,
      mediaType: MT.manifest,
      artifactType: MT.modelIndex,
      config: descriptorOf(manifest.config),
      layers: [descriptorOf(recipeDesc)],
      annotations: { [ANN.hfRepo]: repo, [ANN.hfCommit]: commit, [ANN.revision]: commit },
    };
    const bytes = Buffer.from(JSON.stringify(index), "utf8");
    const client = clientFor(ref.registry, opts);
    for (const d of [manifest.config, recipeDesc]) {
      await client.pushBlob(ref.repository, { digest: d.digest, size: d.size }, (start) => store.openBlob(d.digest, start), opts.signal ? { signal: opts.signal } : {});
    }
    opts.signal?.throwIfAborted();
    const manifestDigest = await client.putManifest(ref.repository, ref.tag, bytes, MT.manifest);
    return { ref: ref.full, manifestDigest, bytes: manifest.config.size + recipeDesc.size + bytes.length };
  });
}

/**
 * The index entry of `repo@commit` under `prefix`, read and checked: every file of the revision
 * with its units in file coordinates. `undefined` (and one line to `warn` naming the entry and why)
 * when there is none, the registry cannot be reached, or the entry is not a sound index of exactly
 * that repo and commit.
 */
export async function readModelIndex(
  prefix: string,
  repo: string,
  commit: string,
  access: RegistryAccess = {},
  warn: (line: string) => void = () => {},
  tag = commit,
): Promise<ModelIndex | undefined> {
  let where = `index ${prefix}/${repo.toLowerCase()}:${tag}`;
  try {
    const ref = indexReference(prefix, repo, commit, tag);
    where = `index ${ref.full}`;
    const client = clientFor(ref.registry, access, { retry: INDEX_RETRY });
    // getManifest refuses more than MANIFEST_LIMIT; config and recipe are read up to DOCUMENT_LIMIT.
    const got = await client.getManifest(ref.repository, ref.tag).catch((err: unknown) => {
      if (err instanceof RegistryError && err.status === 404) return undefined;
      throw err;
    });
    if (!got) {
      warn(`${where}: no such entry`);
      return undefined;
    }
    const manifest = parseManifest(got.bytes, where);
    if (!INDEX_TYPES.has(manifest.artifactType)) throw new CakeError("E_RECIPE", `${where}: artifactType ${JSON.stringify(manifest.artifactType)} is not a cake index or model`);
    if (manifest.config.mediaType !== MT.config) throw new CakeError("E_RECIPE", `${where}: config is not a cake model config`);
    const recipeDesc = recipeLayerOf(manifest, where);
    const read = (d: Descriptor, what: string) => {
      if (d.size > DOCUMENT_LIMIT) throw new CakeError("E_SIZE", `${where}: ${what} is ${d.size} bytes, more than the ${DOCUMENT_LIMIT} cake reads`);
      return client.readBlob(ref.repository, d.digest, DOCUMENT_LIMIT);
    };
    const config = parseConfig(await read(manifest.config, "config"), `${where} config`);
    const recipe = parseRecipe(await read(recipeDesc, "recipe"), `${where} recipe`);
    if (config.source.type !== "hf" || config.source.repo !== repo || config.source.commit !== commit) {
      const src = config.source.type === "hf" ? `${config.source.repo}@${config.source.commit}` : config.source.type === "registry" ? config.source.repository : "a folder";
      throw new CakeError("E_RECIPE", `${where}: its config is of ${src}, not ${repo}@${commit}`);
    }
    return { ref: ref.full, manifestDigest: got.digest, threshold: config.layerRule.threshold, files: indexFiles(config, recipe, where) };
  } catch (err) {
    // One naming of the entry: the checks above name it already, the registry client without "index".
    const line = oneLine(err);
    const full = where.slice("index ".length);
    warn(line.startsWith(where) ? line : line.startsWith(`${full}: `) ? `index ${line}` : `${where}: ${line}`);
    return undefined;
  }
}

/**
 * Every file of the recipe with its units: a whole file is one unit [0, size); a safetensors file's
 * parts follow its header in order, each as long as its blob. Config and recipe must list the same files.
 */
function indexFiles(config: ModelConfig, recipe: Recipe, where: string): ModelIndexFile[] {
  const bad = (what: string): never => {
    throw new CakeError("E_RECIPE", `${where}: ${what}`);
  };
  if (config.files.length !== recipe.files.length) bad(`config lists ${config.files.length} files, the recipe ${recipe.files.length}`);
  return recipe.files.map((f, i) => {
    const c = config.files[i]!;
    if (c.path !== f.path || c.size !== f.size || c.sha256 !== f.sha256) bad(`file ${JSON.stringify(f.path)}: config and recipe disagree`);
    const units: ModelIndexUnit[] = [];
    if (f.digest !== undefined) units.push({ begin: 0, end: f.size, digest: f.digest });
    else {
      let at = Buffer.from(f.header!, "base64").length;
      for (const digest of f.parts!) {
        const end = at + recipe.blobs[digest]!.size;
        units.push({ begin: at, end, digest });
        at = end;
      }
    }
    return { path: f.path, size: f.size, sha256: f.sha256, ...(f.gitOid ? { gitOid: f.gitOid } : {}), ...(f.lfs ? { lfs: true as const } : {}), units };
  });
}

/** The one recipe layer of a cake manifest or index entry. */
function recipeLayerOf(m: ImageManifest, where: string): Descriptor {
  const recipes = m.layers.filter((l) => l.mediaType === MT.recipe);
  if (recipes.length !== 1) throw new CakeError("E_RECIPE", `${where}: has ${recipes.length} recipe layers, not one`);
  return recipes[0]!;
}

/** A descriptor without what a stranger may have added: media type, digest, size, annotations. */
const descriptorOf = (d: Descriptor): Descriptor => ({ mediaType: d.mediaType, digest: d.digest, size: d.size, ...(d.annotations ? { annotations: d.annotations } : {}) });
