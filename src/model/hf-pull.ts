/**
 * `cake pull hf://org/name[@rev]`: a Hub revision into the store as a cake artifact.
 *
 * Plan: resolve the revision to its commit, list the files (tree API) while reading each safetensors
 * header with two Range requests (8 bytes, then N), cut the files into units (format/plan.ts). Then the
 * shared engine fetches every unit with Range requests into the store. Each file is checked against
 * the Hub as soon as its last unit lands: safetensors files re-assembled from the store must hash to
 * the LFS oid (or git oid), whole files to theirs. Only then is the manifest written and tagged.
 */
import { CakeError } from "../errors.js";
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
import { storeArtifact } from "./catalog.js";
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
  stats: TransferStats;
}

type PlannedFile = ModelFile & { hub: HubFile; reader: HubFileReader };

const fileKey = (f: HubFile) => (f.lfs ? f.lfs.oid : `git-${f.oid}`);

/** `make`, called once per key: later calls with the same key get the first call's value. */
function once<K, V>(make: (key: K) => V): (key: K) => V {
  const made = new Map<K, V>();
  return (key) => {
    if (!made.has(key)) made.set(key, make(key));
    return made.get(key)!;
  };
}

/**
 * Reads a safetensors file's header on the Hub: 8 bytes, then N. The reads may start before the tree
 * listing has answered (from the file names in the model info): the file's size, which the length
 * is checked against before the N bytes are asked for, comes from `sizeOf` (undefined: not a file
 * of this commit, nothing more is read).
 */
async function readRemoteHeader(reader: HubFileReader, sizeOf: Promise<Map<string, number>>): Promise<ModelFile["safetensors"]> {
  const first8 = await reader.read(0, 8);
  const size = (await sizeOf).get(reader.path);
  if (size === undefined) return undefined;
  const n = readHeaderLength(first8, size, reader.path);
  const json = await reader.read(8, 8 + n);
  return { headerBytes: Buffer.concat([first8, json]), header: parseHeader(json, size, reader.path) };
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
 * The revision's files, each safetensors file with its header. The tree listing and the header reads
 * run at once: the model info already names the files (`siblings`), the tree gives their sizes and
 * hashes. One round trip less before the first tensor byte.
 */
async function listWithHeaders(hub: HubParams, repo: string, commit: string, siblings: { rfilename: string }[], concurrency: number): Promise<PlannedFile[]> {
  const readerFor = once((path: string) => new HubFileReader(hub, repo, commit, path));
  const listed = listPlanned(hub, repo, commit, readerFor);
  const sizes = listed.then((fs) => new Map(fs.map((f) => [f.path, f.size])));
  sizes.catch(() => {}); // the listing's own error is the one reported, from `listed`
  const pool = new Pool(concurrency);
  const readHeader = once((path: string) => {
    const h = pool.run(() => readRemoteHeader(readerFor(path), sizes));
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
    throw err;
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

    const sorted = await listWithHeaders(hub, ref.repo, commit, info.siblings ?? [], opts.concurrency ?? 16);

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

    // The store's record of each file's ranges, read once for the first look of all its units.
    const rangesOf = once((key: string) => store.knownRanges(key));
    const jobs: BlobJob[] = plan.units.map((u) => {
      const f = byPath.get(u.path)!;
      const key = fileKey(f.hub);
      const whole = u.kind === "file";
      return {
        key: `${key}-${u.begin}-${u.end}`,
        size: u.end - u.begin,
        items: u.tensors.length,
        ...(whole && f.hub.lfs ? { expected: `sha256:${f.hub.lfs.oid}` } : {}),
        label: whole ? `hf://${ref.repo}/${u.path}` : `hf://${ref.repo}/${u.path} bytes ${u.begin}-${u.end}`,
        existing: async (underLock) => {
          const d = (await (underLock ? store.knownRanges(key) : rangesOf(key))).get(`${u.begin}-${u.end}`);
          return d && (await store.hasBlob(d, u.end - u.begin)) ? d : undefined;
        },
        open: (s, e, signal) => f.reader.open(u.begin + s, u.begin + e, signal).then((r) => ({ body: r.body, start: r.start - u.begin })),
        // Small neighbouring units of one file come in one Range request (one round trip, not one per tensor).
        span: { source: key, offset: u.begin, open: (s, e, signal) => f.reader.open(s, e, signal) },
        done: async (digest) => {
          if (whole && !f.hub.lfs) await checkGitOid(store, f, digest);
          await store.recordRange(key, u.begin, u.end, digest);
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
