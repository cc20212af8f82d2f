/**
 * `cake pull hf://org/name[@rev]`: a Hub revision into the store as a cake artifact.
 *
 * Plan: resolve the revision to its commit, list the files (tree API) while reading each safetensors
 * header with one Range request (readSafetensorsHeader over the file as a RangeSource), then
 * convertFiles (src/model/convert.ts) cuts the files into units (format/plan.ts).
 * Then the shared engine fetches every unit with Range requests into the store. Each file is checked against
 * the Hub as soon as its last unit lands: safetensors files re-assembled from the store must hash to
 * the LFS oid (or git oid), whole files to theirs. Only then is the manifest written and tagged.
 */
import { CakeError, isCakeError } from "../errors.js";
import { ANN } from "../format/oci.js";
import { CAKE_DIR, checkRelativePath, isSafeRelativePath } from "../format/paths.js";
import { sortFiles } from "../format/plan.js";
import type { HubParams } from "../hub/config.js";
import { HubFileReader } from "../hub/file-reader.js";
import { listFiles, type HubFile } from "../hub/list-files.js";
import { modelInfo, type ModelInfo } from "../hub/model-info.js";
import { warmHasher } from "../store/hasher.js";
import type { Store } from "../store/layout.js";
import type { TransferStats } from "../transfer/engine.js";
import { Pool } from "../transfer/pool.js";
import type { ProgressSink } from "../transfer/progress.js";
import { isUnverified, storedModel } from "./catalog.js";
import { isUnitOf, type SourcedFile } from "./convert.js";
import { checkStoredCopy } from "./hf-check.js";
import { hubFileSource, readSafetensorsHeader } from "./range-source.js";
import { formatHfRef, ociRefName, type HfRef } from "./ref.js";
import type { RegistryAccess } from "./registry-pull.js";
import { readModelIndex, type ModelIndex } from "./index-artifact.js";
import { takeIndexedBlobs, type IndexBlobsTaken } from "./index-blobs.js";
import { convertReusing, guessFromStore, NO_GUESSES, once, unitId } from "./reuse-convert.js";
import type { Guess } from "./speculate.js";

export interface HfPullOptions {
  store: Store;
  hub: HubParams;
  concurrency?: number;
  chunkSize?: number;
  /** Writes each layer's compressed form as it lands (convert.ts); `compressModel` then drops the raw files. */
  compress?: boolean;
  progress?: ProgressSink;
  /** Cancels the pull: Hub requests and transfers in flight stop, nothing is tagged (what landed stays for a rerun). */
  signal?: AbortSignal;
  /** false: no tensor is taken from other local models by sampling (see speculate.ts). Default on. */
  speculate?: boolean;
  /** Told lines worth a user's eye that are not errors (a wrong guess fetched again). */
  onNotice?: (line: string) => void;
  /** Told where on the Hub each blob's bytes are, as soon as the blob is in the store. */
  onBlob?: (digest: string, source: HubBlobSource) => void;
  /**
   * Registry prefixes holding index artifacts (`--index`, CAKE_INDEX; see index-artifact.ts), tried
   * in order, the first entry found used: the units of the revision, known before the Hub is read,
   * so those the store holds are not fetched.
   */
  index?: IndexSource | IndexSource[];
}

/** Where an index entry of the revision may be. */
export interface IndexSource {
  prefix: string;
  access: RegistryAccess;
  /** The entry's tag (default: the commit). */
  tag?: string;
  /**
   * The registry holds the units' blobs too (a proxy backend): those the store lacks are taken
   * from it rather than the Hub (index-blobs.ts).
   */
  holdsBlobs?: boolean;
  /** No entry there is the usual case: say nothing of it. */
  quiet?: boolean;
}

/** A blob's bytes on the Hub: a byte range of one file of one commit. */
export interface HubBlobSource {
  repo: string;
  commit: string;
  path: string;
  begin: number;
  end: number;
}

export interface PullResult {
  ref: string;
  commit: string;
  manifestDigest: string;
  /** Already in the store: nothing fetched. */
  upToDate: boolean;
  /**
   * Why the Hub was not asked (HF_HUB_OFFLINE) or could not be reached: the result is the store's
   * copy of the reference, as it was last pulled (huggingface_hub falls back to its cache the same way).
   */
  offline?: string;
  /** The store's copy used offline came from an archive, unconfirmed by the Hub (see hf-check.ts). */
  unverified?: boolean;
  /** The store's copy came from an archive and the Hub confirmed its files: now a verified tag. */
  confirmed?: boolean;
  /** The store's copy came from an archive and its files were not the commit's: this manifest was replaced. */
  replaced?: string;
  stats: TransferStats;
  /**
   * Blobs (tensors, packs of small ones) taken from models already in the store (speculate.ts),
   * proven by each file's hash: how many and how many tensors in them, their bytes, from which
   * models; blobs sampled, the bytes the samples cost; files whose guesses were wrong, fetched again.
   */
  reuse?: { byIndex: number; blobs: number; tensors: number; bytes: number; models: string[]; sampled: number; windowBytes: number; wrongFiles: number; fromRegistry?: IndexBlobsTaken };
}

type PlannedFile = SourcedFile & { hub: HubFile };

/**
 * The commit's date as the config records it (UTC, to the second; the ModelPack view's `createdAt`),
 * from the Hub's `lastModified` of the revision; nothing when the Hub gives none or no date.
 */
function commitDate(info: ModelInfo): { date?: string } {
  const t = typeof info.lastModified === "string" ? Date.parse(info.lastModified) : NaN;
  return Number.isFinite(t) ? { date: new Date(t).toISOString().replace(/\.\d{3}Z$/, "Z") } : {};
}

/** What names a Hub file's bytes in the store: its LFS sha256, else its git oid. */
const fileKey = (f: HubFile) => (f.lfs ? f.lfs.oid : `git-${f.oid}`);

/** The files of an index that are the Hub's: the same path, size and (where listed) sha256. */
const indexedFiles = (index: ModelIndex, files: Map<string, SourcedFile>) =>
  index.files.filter((f) => {
    const mine = files.get(f.path);
    return mine !== undefined && mine.size === f.size && (!mine.sha256 || mine.sha256 === f.sha256);
  });

/** Every unit an index names a digest for, in a file of the same path and size as the Hub's. */
function indexGuesses(index: ModelIndex, files: Map<string, SourcedFile>): Map<string, Guess> {
  const out = new Map<string, Guess>();
  for (const f of indexedFiles(index, files)) {
    for (const u of f.units) out.set(unitId({ path: f.path, begin: u.begin, end: u.end }), { digest: u.digest, model: `index ${index.ref}` });
  }
  return out;
}

/** The first index entry of `repo@commit` found among `sources`, and where it was found. */
async function readFirstIndex(sources: IndexSource[], repo: string, commit: string, notice: (line: string) => void): Promise<{ index: ModelIndex; source: IndexSource } | undefined> {
  for (const source of sources) {
    const index = await readModelIndex(source.prefix, repo, commit, source.access, source.quiet ? () => {} : notice, source.tag);
    if (index) return { index, source };
  }
  return undefined;
}

/**
 * A fresh file's header is read with its length in one request of this many bytes (a 7B shard's
 * header is ~20 KB; a longer one takes a second request for the rest). The tensor bytes that come
 * along, under 64 KiB a file, are dropped and fetched again with their tensors. A file the store
 * holds bytes of (a killed pull run again) is read as 8 bytes then N, so that no byte already on
 * disk is fetched again.
 */
const HEADER_GUESS = 64 << 10;

/** Every file of the revision (tree API), checked, with a source each (its reader from `readerFor`). */
async function listPlanned(hub: HubParams, repo: string, commit: string, readerFor: (path: string) => HubFileReader): Promise<PlannedFile[]> {
  const files: PlannedFile[] = [];
  for await (const f of listFiles(hub, repo, commit)) {
    checkRelativePath(f.path, `hf://${repo} file`);
    if (f.path === CAKE_DIR || f.path.startsWith(`${CAKE_DIR}/`)) {
      throw new CakeError("E_PATH", `hf://${repo}: file ${f.path} uses the reserved ${CAKE_DIR}/ prefix`);
    }
    const size = f.lfs?.size ?? f.size;
    // An LFS file's git oid is its pointer's, not its content's: only non-LFS files carry one.
    files.push({
      path: f.path,
      size,
      hub: f,
      source: hubFileSource(readerFor(f.path), fileKey(f), size),
      expect: f.lfs ? { sha256: f.lfs.oid } : { gitOid: f.oid },
      ...(f.lfs ? { sha256: f.lfs.oid, lfs: true } : { gitOid: f.oid }),
    });
  }
  return sortFiles(files);
}

/**
 * The revision's files, each safetensors file with its header. The tree listing and each file's
 * resolve (where the CDN serves it) run at once, from the file names in the model info (`siblings`);
 * the header read waits for the tree, which gives the file's size and key. One round trip less before
 * the first tensor byte. `holdsBytesOf(key)`: whether the store has any bytes of the file with that key.
 */
async function listWithHeaders(
  hub: HubParams,
  repo: string,
  commit: string,
  siblings: { rfilename: string }[],
  concurrency: number,
  holdsBytesOf: (key: string) => Promise<boolean>,
  /** How much of a fresh file to read for its header at once (HEADER_GUESS, or 8: length, then header). */
  freshRead = HEADER_GUESS,
): Promise<PlannedFile[]> {
  const readerFor = once((path: string) => new HubFileReader(hub, repo, commit, path));
  const listed = listPlanned(hub, repo, commit, readerFor);
  const byPath = listed.then((fs) => new Map(fs.map((f) => [f.path, f])));
  byPath.catch(() => {}); // the listing's own error is the one reported, from `listed`
  const pool = new Pool(concurrency);
  const readHeader = once((path: string) => {
    const reader = readerFor(path);
    const h = (async () => {
      await pool.run(() => reader.locate().catch(() => {})); // a file the commit lacks: the tree says so
      const f = (await byPath).get(path);
      if (!f) return undefined;
      const first = (await holdsBytesOf(f.source.key)) ? 8 : freshRead;
      return pool.run(() => readSafetensorsHeader(f.source, first));
    })();
    h.catch(() => {}); // awaited below, for the files the tree lists
    return h;
  });
  for (const { rfilename: path } of siblings) {
    // Only names the tree listing would accept (it checks and reports them itself).
    if (typeof path === "string" && path.endsWith(".safetensors") && isSafeRelativePath(path)) readHeader(path);
  }
  const files = await listed;
  await Promise.all(
    files.filter((f) => f.path.endsWith(".safetensors")).map(async (f) => {
      const st = await readHeader(f.path);
      if (st) f.safetensors = st;
    }),
  );
  return files;
}

export async function pullHf(ref: HfRef, opts: HfPullOptions): Promise<PullResult> {
  const { store } = opts;
  // One signal for every request of the pull: the caller's and the Hub parameters' own.
  const signals = [opts.signal, opts.hub.signal].filter((s): s is AbortSignal => s !== undefined);
  const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
  const hub: HubParams = signal ? { ...opts.hub, signal } : opts.hub;
  const name = formatHfRef(ref);
  // The lease (a file write) and the hash worker's start overlap the Hub's first answer. The worker is
  // not started when the revision is here already: then the pull is most likely up to date.
  const leased = store.lease();
  leased.catch(() => {}); // awaited below
  store.resolve(name).then(
    (have) => have || warmHasher(),
    () => warmHasher(),
  );
  let info: ModelInfo;
  try {
    info = await modelInfo(hub, ref.repo, ref.revision);
  } catch (err) {
    await (await leased.catch(() => undefined))?.();
    if (!isCakeError(err, "E_NETWORK") && !isCakeError(err, "E_OFFLINE")) throw err;
    const stored = await storedModel(store, name);
    if (!stored) throw new CakeError(err.code, `${err.message}; and ${name} is not in the store ${store.root}`, { cause: err });
    const commit = stored.commit ?? ref.revision;
    const unverified = isUnverified(stored.descriptor) ? { unverified: true } : {};
    return { ref: name, commit, manifestDigest: stored.descriptor.digest, upToDate: true, offline: err.message, ...unverified, stats: { fetchedBytes: 0, skippedBlobs: 0 } };
  }
  const commit = info.sha;
  const byCommit = formatHfRef({ repo: ref.repo, revision: commit });
  const tagExtra = { [ANN.hfRepo]: ref.repo, [ANN.hfCommit]: commit };

  const release = await leased;
  try {
    // Up to date: the commit is already a tagged artifact, whole and the Hub's; just (re)point the revision at it.
    const have = await store.resolve(byCommit);
    const stored = await checkStoredCopy(store, hub, ref.repo, commit, have);
    if (have && (stored === "verified" || stored === "confirmed")) {
      if (stored === "confirmed") await store.tag(byCommit, ociRefName(byCommit), have, tagExtra); // no longer unverified
      if (name !== byCommit) await store.tag(name, ociRefName(name), have, tagExtra);
      return { ref: name, commit, manifestDigest: have.digest, upToDate: true, ...(stored === "confirmed" ? { confirmed: true } : {}), stats: { fetchedBytes: 0, skippedBlobs: 0 } };
    }
    const replaced = have && stored === "impostor" ? { replaced: have.digest } : {};

    // The store's record of each file's ranges, read once for the header reads and the first look of all its units.
    const rangesOf = once((key: string) => store.knownRanges(key));
    const partials = store.ingestKeys();
    partials.catch(() => {}); // awaited by holdsBytesOf
    const holdsBytesOf = async (key: string) => (await rangesOf(key)).size > 0 || (await partials).some((k) => isUnitOf(k, key));
    // With an index the units' digests are known, and so are the tensors most likely in the store: a
    // header read takes no tensor bytes along (8 bytes, then the header: a round trip more, no bytes dropped).
    const indexSources = opts.index === undefined ? [] : Array.isArray(opts.index) ? opts.index : [opts.index];
    // (Not for a proxy backend's resume entry: there is usually none, and a first read's few KiB of tensor bytes cost little.)
    const sorted = await listWithHeaders(hub, ref.repo, commit, info.siblings ?? [], opts.concurrency ?? 16, holdsBytesOf, indexSources.some((s) => !s.holdsBlobs) ? 8 : HEADER_GUESS);

    const byPath = new Map(sorted.map((f) => [f.path, f]));
    // An index (index-artifact.ts) names every unit's digest before a byte moves: no sampling then.
    // It is a guess like the samples: each file's hash is still the proof, a lie costs a refetch.
    const found = await readFirstIndex(indexSources, ref.repo, commit, (line) => opts.onNotice?.(line));
    const index = found?.index;
    // Speculation (speculate.ts): tensors the store may hold already, under other models' names; the declared base model first.
    const base = info.cardData?.base_model;
    const bases = (Array.isArray(base) ? base : base ? [base] : []).filter((b): b is string => typeof b === "string");
    const guessed = index
      ? { guesses: indexGuesses(index, byPath), stats: { sampled: 0, windows: 0, windowBytes: 0 } }
      : opts.speculate === false
        ? NO_GUESSES()
        : await guessFromStore(store, sorted, rangesOf, (r) => bases.some((b) => r.startsWith(`hf://${b}@`)), byCommit);
    // An index whose registry holds the blobs (a proxy backend a replica died pushing to): what the
    // store lacks comes from there, the Hub gives only the rest.
    const fromRegistry = found?.source.holdsBlobs
      ? await takeIndexedBlobs(store, found.index.ref, indexedFiles(found.index, byPath).flatMap((f) => f.units), found.source.access, {
          ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
          ...(signal ? { signal } : {}),
          warn: (line) => opts.onNotice?.(line),
        })
      : undefined;
    const converted = await convertReusing(sorted, {
      store,
      server: ref.repo,
      name,
      owner: "the Hub's",
      source: { type: "hf", repo: ref.repo, commit, ...commitDate(info) },
      where: (path) => `hf://${ref.repo}@${commit.slice(0, 12)}/${path}`,
      label: (_f, u) => (u.kind === "file" ? `hf://${ref.repo}/${u.path}` : `hf://${ref.repo}/${u.path} bytes ${u.begin}-${u.end}`),
      rangesOf,
      guesses: guessed.guesses,
      ...(index ? { byIndex: true } : {}),
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
      ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
      ...(opts.compress ? { compress: true } : {}),
      ...(opts.progress ? { progress: opts.progress } : {}),
      ...(signal ? { signal } : {}),
      ...(opts.onNotice ? { onNotice: opts.onNotice } : {}),
      onBlob: (u, digest) => opts.onBlob?.(digest, { repo: ref.repo, commit, path: u.path, begin: u.begin, end: u.end }),
    });
    const { desc, stats, taken: took, indexWrong } = converted;
    if (index && indexWrong > 0) opts.onNotice?.(`${index.ref}: ${indexWrong} units differ from the Hub's bytes; the Hub's were used (checked by each file's sha256)`);
    const reuse = { byIndex: index ? took.length : 0, blobs: took.length, tensors: took.reduce((k, g) => k + g.tensors, 0), bytes: took.reduce((n, g) => n + g.bytes, 0), models: [...new Set(took.map((g) => g.model))], sampled: guessed.stats.sampled, windowBytes: guessed.stats.windowBytes, wrongFiles: converted.wrongFiles, ...(fromRegistry ? { fromRegistry } : {}) };
    const digest = desc.digest;
    await store.markVerified(digest); // every file matched the Hub's hashes above: export need not hash again
    await store.tag(byCommit, ociRefName(byCommit), desc, tagExtra);
    if (name !== byCommit) await store.tag(name, ociRefName(name), desc, tagExtra);
    return { ref: name, commit, manifestDigest: digest, upToDate: false, ...replaced, stats, reuse };
  } finally {
    await release();
  }
}
