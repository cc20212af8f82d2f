/**
 * `cake pull hf://org/name[@rev]`: a Hub revision into the store as a cake artifact.
 *
 * Plan: resolve the revision to its commit, list the files (tree API) while reading each safetensors
 * header with one Range request (see readRemoteHeader), cut the files into units (format/plan.ts).
 * Then the shared engine fetches every unit with Range requests into the store. Each file is checked against
 * the Hub as soon as its last unit lands: safetensors files re-assembled from the store must hash to
 * the LFS oid (or git oid), whole files to theirs. Only then is the manifest written and tagged.
 */
import { CakeError, isCakeError } from "../errors.js";
import { buildArtifact, type Artifact } from "../format/artifact.js";
import { gitBlobPrefix } from "../format/git-oid.js";
import { ANN } from "../format/oci.js";
import { CAKE_DIR, checkRelativePath, isSafeRelativePath } from "../format/paths.js";
import { MAX_LAYERS, PACK_FACTOR, planUnits, sortFiles, type ModelFile, type Unit } from "../format/plan.js";
import { parseHeader, readHeaderLength } from "../format/safetensors.js";
import type { HubParams } from "../hub/config.js";
import { HubFileReader } from "../hub/file-reader.js";
import { listFiles, type HubFile } from "../hub/list-files.js";
import { modelInfo, type ModelInfo } from "../hub/model-info.js";
import { hashParts, runningHash, warmHasher, type HashPart, type RunningHash } from "../store/hasher.js";
import type { Store } from "../store/layout.js";
import { transferBlobs, type BlobJob, type TransferStats } from "../transfer/engine.js";
import { Pool } from "../transfer/pool.js";
import type { ProgressSink } from "../transfer/progress.js";
import { storeArtifact, storedModel } from "./catalog.js";
import { proveServed, type HeldUnit } from "./reuse-proof.js";
import { formatHfRef, ociRefName, type HfRef } from "./ref.js";

export interface HfPullOptions {
  store: Store;
  hub: HubParams;
  concurrency?: number;
  chunkSize?: number;
  progress?: ProgressSink;
  /** Told where on the Hub each blob's bytes are, as soon as the blob is in the store. */
  onBlob?: (digest: string, source: HubBlobSource) => void;
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
  stats: TransferStats;
}

type PlannedFile = ModelFile & { hub: HubFile; reader: HubFileReader };

const fileKey = (f: HubFile) => (f.lfs ? f.lfs.oid : `git-${f.oid}`);
/** The ingest key of bytes [begin, end) of the file with key `file`. */
const unitKey = (file: string, begin: number, end: number) => `${file}-${begin}-${end}`;
/** Whether ingest key `ingest` is a unit of the file with key `file` (see unitKey). */
const isUnitOf = (ingest: string, file: string) => ingest.startsWith(`${file}-`);

/** `make`, called once per key: later calls with the same key get the first call's value. */
function once<K, V>(make: (key: K) => V): (key: K) => V {
  const made = new Map<K, V>();
  return (key) => {
    if (!made.has(key)) made.set(key, make(key));
    return made.get(key)!;
  };
}

/**
 * A fresh file's header is read with its length in one request of this many bytes (a 7B shard's
 * header is ~20 KB; a longer one takes a second request for the rest). The tensor bytes that come
 * along, under 64 KiB a file, are dropped and fetched again with their tensors.
 */
const HEADER_GUESS = 64 << 10;

/** What a header read needs to know of a file from the tree listing and the store. */
interface HeaderPlan {
  size: number;
  /** The store holds none of its bytes: the first read may take tensor bytes along. */
  fresh: boolean;
}

/**
 * Reads a safetensors file's header on the Hub, its length checked against the file's size before
 * more is asked for. A fresh file's length and header come in one request (HEADER_GUESS). A file the
 * store holds bytes of (a killed pull run again) is read as 8 bytes then N, so that no byte already
 * on disk is fetched again.
 */
async function readRemoteHeader(reader: HubFileReader, f: HeaderPlan): Promise<NonNullable<ModelFile["safetensors"]>> {
  const head = f.size < 8 ? Buffer.alloc(0) : await reader.read(0, Math.min(f.size, f.fresh ? HEADER_GUESS : 8));
  const n = readHeaderLength(head, f.size, reader.path);
  const json = 8 + n <= head.length ? head.subarray(8, 8 + n) : Buffer.concat([head.subarray(8), await reader.read(head.length, 8 + n)]);
  return { headerBytes: Buffer.concat([head.subarray(0, 8), json]), header: parseHeader(json, f.size, reader.path) };
}

/** Every file of the revision (tree API), checked, with a reader each (the one `readerFor` made). */
async function listPlanned(hub: HubParams, repo: string, commit: string, readerFor: (path: string) => HubFileReader): Promise<PlannedFile[]> {
  const files: PlannedFile[] = [];
  for await (const f of listFiles(hub, repo, commit)) {
    checkRelativePath(f.path, `hf://${repo} file`);
    if (f.path === CAKE_DIR || f.path.startsWith(`${CAKE_DIR}/`)) {
      throw new CakeError("E_PATH", `hf://${repo}: file ${f.path} uses the reserved ${CAKE_DIR}/ prefix`);
    }
    const size = f.lfs?.size ?? f.size;
    // An LFS file's git oid is its pointer's, not its content's: only non-LFS files carry one.
    files.push({ path: f.path, size, hub: f, reader: readerFor(f.path), ...(f.lfs ? { sha256: f.lfs.oid, lfs: true } : { gitOid: f.oid }) });
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
): Promise<PlannedFile[]> {
  const readerFor = once((path: string) => new HubFileReader(hub, repo, commit, path));
  const listed = listPlanned(hub, repo, commit, readerFor);
  const byPath = listed.then((fs) => new Map(fs.map((f) => [f.path, f])));
  byPath.catch(() => {}); // the listing's own error is the one reported, from `listed`
  const planFor = async (path: string): Promise<HeaderPlan | undefined> => {
    const f = (await byPath).get(path);
    return f && { size: f.size, fresh: !(await holdsBytesOf(fileKey(f.hub))) };
  };
  const pool = new Pool(concurrency);
  const readHeader = once((path: string) => {
    const reader = readerFor(path);
    const h = (async () => {
      await pool.run(() => reader.locate().catch(() => {})); // a file the commit lacks: the tree says so
      const f = await planFor(path);
      return f && pool.run(() => readRemoteHeader(reader, f));
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
  const { store, hub } = opts;
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
    return { ref: name, commit, manifestDigest: stored.descriptor.digest, upToDate: true, offline: err.message, stats: { fetchedBytes: 0, skippedBlobs: 0 } };
  }
  const commit = info.sha;
  const byCommit = formatHfRef({ repo: ref.repo, revision: commit });
  const tagExtra = { [ANN.hfRepo]: ref.repo, [ANN.hfCommit]: commit };

  const release = await leased;
  try {
    // Up to date: the commit is already a tagged artifact; just (re)point the revision at it.
    const have = await store.resolve(byCommit);
    if (have && (await store.hasBlob(have.digest))) {
      if (name !== byCommit) await store.tag(name, ociRefName(name), have, tagExtra);
      return { ref: name, commit, manifestDigest: have.digest, upToDate: true, stats: { fetchedBytes: 0, skippedBlobs: 0 } };
    }

    // The store's record of each file's ranges, read once for the header reads and the first look of all its units.
    const rangesOf = once((key: string) => store.knownRanges(key));
    const partials = store.ingestKeys();
    partials.catch(() => {}); // awaited by holdsBytesOf
    const holdsBytesOf = async (key: string) => (await rangesOf(key)).size > 0 || (await partials).some((k) => isUnitOf(k, key));
    const sorted = await listWithHeaders(hub, ref.repo, commit, info.siblings ?? [], opts.concurrency ?? 16, holdsBytesOf);

    const plan = planUnits(sorted);
    const byPath = new Map(sorted.map((f) => [f.path, f]));
    const unitDigests: string[] = new Array(plan.units.length);
    // Each safetensors file is checked against the Hub as its units land (see FileCheck).
    const checks = new Map(sorted.filter((f) => f.safetensors).map((f) => [f.path, new FileCheck(store, f, plan.units)]));
    const verifications: Promise<void>[] = [];
    const landed = (f: FileCheck) => {
      const v = f.landed(unitDigests);
      if (!v) return;
      v.catch(() => {}); // awaited below; a failed transfer must not leave it unhandled
      verifications.push(v);
    };
    for (const c of checks.values()) landed(c); // a file whose tensors are all empty has no units to wait for

    // Bytes the store holds from another repo's copy of a file serve this one only once this repo's own
    // CDN has shown it serves them (see reuse-proof.ts); asked once per file, recorded for next time.
    const proven = once(async (path: string) => {
      const f = byPath.get(path)!;
      const key = fileKey(f.hub);
      const records = await store.knownRanges(key);
      const foreign: HeldUnit[] = [];
      for (const u of plan.units) {
        const rec = u.path === path ? records.get(`${u.begin}-${u.end}`) : undefined;
        if (rec && !rec.repos.has(ref.repo) && (await store.hasBlob(rec.digest, u.end - u.begin))) foreign.push({ begin: u.begin, end: u.end, digest: rec.digest });
      }
      if (foreign.length === 0) return;
      await proveServed(store, foreign, (a, b) => f.reader.read(a, b), `hf://${ref.repo}@${commit.slice(0, 12)}/${path}`);
      for (const u of foreign) await store.recordRange(key, u.begin, u.end, u.digest, ref.repo);
    });
    const jobs: BlobJob[] = plan.units.map((u) => {
      const f = byPath.get(u.path)!;
      const key = fileKey(f.hub);
      const whole = u.kind === "file";
      return {
        key: unitKey(key, u.begin, u.end),
        size: u.end - u.begin,
        items: u.tensors.length,
        ...(whole && f.hub.lfs ? { expected: `sha256:${f.hub.lfs.oid}` } : {}),
        label: whole ? `hf://${ref.repo}/${u.path}` : `hf://${ref.repo}/${u.path} bytes ${u.begin}-${u.end}`,
        existing: async (underLock) => {
          const rec = (await (underLock ? store.knownRanges(key) : rangesOf(key))).get(`${u.begin}-${u.end}`);
          if (!rec || !(await store.hasBlob(rec.digest, u.end - u.begin))) return undefined;
          if (!rec.repos.has(ref.repo)) await proven(u.path);
          return rec.digest;
        },
        open: (s, e, signal) => f.reader.open(u.begin + s, u.begin + e, signal).then((r) => ({ body: r.body, start: r.start - u.begin })),
        // Small neighbouring units of one file come in one Range request (one round trip, not one per tensor).
        span: { source: key, offset: u.begin, open: (s, e, signal) => f.reader.open(s, e, signal) },
        done: async (digest) => {
          if (whole && !f.hub.lfs) await checkGitOid(store, f, digest);
          await store.recordRange(key, u.begin, u.end, digest, ref.repo);
        },
      };
    });
    const onBlob = (i: number, digest: string) => {
      unitDigests[i] = digest;
      const u = plan.units[i]!;
      opts.onBlob?.(digest, { repo: ref.repo, commit, path: u.path, begin: u.begin, end: u.end });
      const c = checks.get(u.path);
      if (c) landed(c);
    };
    const { stats } = await transferBlobs(store, jobs, {
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
      ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
      ...(opts.progress ? { progress: opts.progress } : {}),
      onBlob,
    }).catch((err: unknown) => {
      for (const c of checks.values()) c.drop();
      throw err;
    });
    const settled = await Promise.allSettled(verifications);
    const bad = settled.find((s) => s.status === "rejected") as PromiseRejectedResult | undefined;
    if (bad) throw bad.reason;

    for (const f of sorted) if (!f.sha256) f.sha256 = unitDigests[plan.units.findIndex((u) => u.path === f.path)]!.slice(7);
    const artifact: Artifact = buildArtifact({
      files: sorted,
      plan,
      unitDigests,
      source: { type: "hf", repo: ref.repo, commit },
      maxLayers: MAX_LAYERS,
      packFactor: PACK_FACTOR,
    });
    const desc = await storeArtifact(store, artifact);
    const digest = desc.digest;
    await store.markVerified(digest); // every file matched the Hub's hashes above: export need not hash again
    await store.tag(byCommit, ociRefName(byCommit), desc, tagExtra);
    if (name !== byCommit) await store.tag(name, ociRefName(name), desc, tagExtra);
    return { ref: name, commit, manifestDigest: digest, upToDate: false, stats };
  } finally {
    await release();
  }
}

async function checkGitOid(store: Store, f: PlannedFile, digest: string): Promise<void> {
  const { git: oid } = await hashParts({ parts: [{ file: store.blobPath(digest), start: 0, end: f.size }], gitPrefix: gitBlobPrefix(f.size) });
  if (oid !== f.hub.oid) {
    throw new CakeError("E_DIGEST", `hf://…/${f.path}: downloaded bytes have git oid ${oid}, the Hub says ${f.hub.oid}`);
  }
}

/**
 * The check of one safetensors file against the Hub's LFS sha256 (or git oid): the file as export
 * rebuilds it (header + its units from the store), hashed on a hash worker unit by unit in file
 * order as the units land, so the last unit's arrival leaves only its own bytes to hash, not the
 * whole file. On a mismatch the file's ranges are forgotten so the next pull fetches them again.
 */
class FileCheck {
  private next = 0;
  private finished = false;
  private readonly hash: RunningHash;
  /** Indices into the plan's units of this file's units, in file order. */
  private readonly mine: number[];

  constructor(
    private readonly store: Store,
    private readonly f: PlannedFile,
    private readonly units: Unit[],
  ) {
    this.mine = units.flatMap((u, i) => (u.path === f.path ? [i] : [])).sort((a, b) => units[a]!.begin - units[b]!.begin);
    this.hash = runningHash(f.hub.lfs ? undefined : gitBlobPrefix(f.size));
    this.hash.update([{ bytes: f.safetensors!.headerBytes }]);
  }

  /** Feeds the units now in the store in order; the check itself once the last one is in. */
  landed(digests: string[]): Promise<void> | undefined {
    const parts: HashPart[] = [];
    while (this.next < this.mine.length && digests[this.mine[this.next]!] !== undefined) {
      const i = this.mine[this.next++]!;
      parts.push({ file: this.store.blobPath(digests[i]!), start: 0, end: this.units[i]!.end - this.units[i]!.begin });
    }
    if (parts.length) this.hash.update(parts);
    if (this.next < this.mine.length || this.finished) return undefined;
    this.finished = true;
    return this.finish();
  }

  drop(): void {
    if (!this.finished) this.hash.drop();
    this.finished = true;
  }

  private async finish(): Promise<void> {
    const { f } = this;
    const { sha256: got, git: gitGot } = await this.hash.digest();
    const ok = f.hub.lfs ? got === f.hub.lfs.oid : gitGot === f.hub.oid;
    if (!ok) {
      await this.store.forgetRanges(fileKey(f.hub));
      const want = f.hub.lfs ? `sha256 ${f.hub.lfs.oid}` : `git oid ${f.hub.oid}`;
      throw new CakeError("E_DIGEST", `${f.path}: downloaded bytes hash to ${f.hub.lfs ? `sha256 ${got}` : `git oid ${gitGot}`}, the Hub says ${want}`);
    }
    f.sha256 = got;
  }
}
