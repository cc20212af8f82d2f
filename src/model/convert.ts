/**
 * A model's files, each readable by range (a RangeSource: the Hub, a local folder, a registry blob),
 * into the store as a cake artifact: the layer rule cuts them into units (format/plan.ts), the one
 * engine fetches every unit the store lacks, each file is checked as its units land (FileCheck), and
 * the manifest, config and recipe are written. `pullHf` and `importDir` build the file list and the
 * hooks that are theirs (the Hub's ranges record and proof of possession; nothing for a folder).
 */
import { CakeError } from "../errors.js";
import { buildArtifact, needsTensorHashes, type Artifact, type ModelConfig } from "../format/artifact.js";
import { gitBlobPrefix } from "../format/git-oid.js";
import type { Descriptor } from "../format/oci.js";
import { MAX_LAYERS, PACK_FACTOR, planUnits, type ModelFile, type Unit } from "../format/plan.js";
import { runningHash, type RunningHash } from "../store/hasher.js";
import { feedBlob, hashBlob } from "../store/blob-hash.js";
import type { ContentStore } from "../store/content.js";
import type { Store } from "../store/layout.js";
import { transferBlobs, type BlobJob, type TransferStats } from "../transfer/engine.js";
import type { ProgressSink } from "../transfer/progress.js";
import { storeArtifact } from "./catalog.js";
import { BLOBS_AT_ONCE, codingDtype, MIN_COMPRESS_BYTES } from "./compress.js";
import type { RangeSource } from "./range-source.js";

export interface SourcedFile extends ModelFile {
  source: RangeSource;
  /**
   * What the file as cake rebuilds it must hash to, when its source says (the Hub's LFS sha256, or
   * the git oid of a file outside LFS). Whole files are checked as their blob lands, safetensors
   * files unit by unit (FileCheck); without it, nothing is checked beyond each blob's own digest.
   */
  expect?: { sha256: string } | { gitOid: string };
}

export interface ConvertOptions {
  store: Store;
  source: ModelConfig["source"];
  concurrency?: number;
  chunkSize?: number;
  progress?: ProgressSink;
  signal?: AbortSignal;
  /** Told the units the layer rule cut the files into, before any is fetched. */
  planned?(units: readonly Unit[]): void;
  /** A unit's name in errors (default: the source's `what` and the byte range). */
  label?(f: SourcedFile, u: Unit): string;
  /** The digest of a unit the store already holds, if it does (see BlobJob.existing for `underLock`). */
  existing?(f: SourcedFile, u: Unit, underLock: boolean): Promise<string | undefined>;
  /** A unit's blob is in the store. */
  done?(f: SourcedFile, u: Unit, digest: string): Promise<void>;
  /** A file rebuilt from its units hashed to what its source said. */
  checked?(f: SourcedFile): Promise<void>;
  /** A file rebuilt from its units did not hash to what its source said: forget what is recorded of it. */
  mismatch?(f: SourcedFile): Promise<void>;
  /** Told each unit's digest as soon as its blob is in the store. */
  onBlob?(u: Unit, digest: string): void;
  /**
   * Writes each unit's compressed form beside its raw blob as it lands (while the rest downloads);
   * the raw files stay for the file checks, `compressModel` removes them once the model is tagged.
   */
  compress?: boolean;
}

/** The ingest key of bytes [begin, end) of the source with key `source`. */
export const unitKey = (source: string, begin: number, end: number) => `${source}-${begin}-${end}`;
/** Whether ingest key `ingest` is a unit of the source with key `source` (see unitKey). */
export const isUnitOf = (ingest: string, source: string) => ingest.startsWith(`${source}-`);

/** Converts `files` (sorted by path, safetensors ones with their headers) into a stored artifact. */
export async function convertFiles(files: SourcedFile[], opts: ConvertOptions): Promise<{ artifact: Artifact; desc: Descriptor; stats: TransferStats }> {
  const { store } = opts;
  const plan = planUnits(files);
  opts.planned?.(plan.units);
  const byPath = new Map(files.map((f) => [f.path, f]));
  const unitDigests: string[] = new Array(plan.units.length);
  const checks = new Map(files.filter((f) => f.safetensors && f.expect).map((f) => [f.path, new FileCheck(store, f, plan.units)]));
  const verifications: Promise<void>[] = [];
  const landed = (c: FileCheck) => {
    const v = c.landed(unitDigests)?.then(
      () => opts.checked?.(c.f),
      async (err: unknown) => {
        await opts.mismatch?.(c.f);
        throw err;
      },
    );
    if (!v) return;
    v.catch(() => {}); // awaited below; a failed transfer must not leave it unhandled
    verifications.push(v);
  };
  for (const c of checks.values()) landed(c); // a file whose tensors are all empty has no units to wait for

  const jobs: BlobJob[] = plan.units.map((u) => {
    const f = byPath.get(u.path)!;
    const src = f.source;
    const whole = u.kind === "file";
    const expect = f.expect;
    return {
      key: unitKey(src.key, u.begin, u.end),
      size: u.end - u.begin,
      items: u.tensors.length,
      ...(whole && expect && "sha256" in expect ? { expected: `sha256:${expect.sha256}` } : {}),
      label: opts.label?.(f, u) ?? `${src.what} bytes ${u.begin}-${u.end}`,
      existing: (underLock) => opts.existing?.(f, u, underLock === true) ?? Promise.resolve(undefined),
      open: (s, e, signal) => src.open(u.begin + s, u.begin + e, signal).then((r) => ({ body: r.body, start: r.start - u.begin })),
      // Small neighbouring units of one file come in one Range request (one round trip, not one per tensor).
      span: { source: src.key, offset: u.begin, open: (s, e, signal) => src.open(s, e, signal) },
      done: async (digest) => {
        if (whole && expect && "gitOid" in expect) await checkGitOid(store, f, expect.gitOid, digest);
        await opts.done?.(f, u, digest);
      },
    };
  });
  const compressing = opts.compress ? new BackgroundCompress(store) : undefined;
  const onBlob = (i: number, digest: string) => {
    unitDigests[i] = digest;
    const u = plan.units[i]!;
    opts.onBlob?.(u, digest);
    compressing?.add(digest, u);
    const c = checks.get(u.path);
    if (c) landed(c);
  };
  const { stats } = await transferBlobs(store, jobs, {
    ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
    ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
    ...(opts.progress ? { progress: opts.progress } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
    onBlob,
  }).catch((err: unknown) => {
    for (const c of checks.values()) c.drop();
    throw err;
  });
  // Each packed tensor's own sha256 for the config, on the hash workers alongside the file checks.
  const [settled, packedTensorHashes] = await Promise.all([Promise.allSettled(verifications), hashPackedTensors(store, plan.units, unitDigests), compressing?.done()]);
  const bad = settled.find((s) => s.status === "rejected") as PromiseRejectedResult | undefined;
  if (bad) throw bad.reason;

  for (const f of files) if (!f.sha256) f.sha256 = unitDigests[plan.units.findIndex((u) => u.path === f.path)]!.slice(7);
  const artifact = buildArtifact({ files, plan, unitDigests, packedTensorHashes, source: opts.source, maxLayers: MAX_LAYERS, packFactor: PACK_FACTOR });
  const desc = await storeArtifact(store, artifact);
  return { artifact, desc, stats };
}

/**
 * Compressed forms written as units land, a few at a time; a failure is left to `compressModel`,
 * which tries again (and says why) once the model is tagged.
 */
class BackgroundCompress {
  private readonly queue: [string, Unit][] = [];
  private readonly running = new Set<Promise<void>>();
  constructor(private readonly store: Store) {}

  add(digest: string, u: Unit): void {
    if (u.end - u.begin < MIN_COMPRESS_BYTES) return;
    this.queue.push([digest, u]);
    this.pump();
  }

  private pump(): void {
    while (this.running.size < BLOBS_AT_ONCE && this.queue.length) {
      const [digest, u] = this.queue.shift()!;
      const p: Promise<void> = this.store
        .compressBlob(digest, codingDtype(u.tensors.map((t) => ({ dtype: t.dtype, size: t.end - t.begin }))), { keepRaw: true })
        .then(
          () => {},
          () => {},
        )
        .finally(() => {
          this.running.delete(p);
          this.pump();
        });
      this.running.add(p);
    }
  }

  async done(): Promise<void> {
    while (this.running.size) await Promise.all(this.running);
  }
}

/**
 * The sha256 (hex) of each tensor of every pack holding more than one tensor with bytes (the config's
 * per-tensor `sha256`, which lets `cake diff` tell a changed tensor from its unchanged neighbours),
 * index-aligned with `units`: each tensor's range of its pack blob, read back from the store (the page
 * cache: just written) on the hash workers, so no byte is fetched twice.
 */
async function hashPackedTensors(store: ContentStore, units: Unit[], digests: string[]): Promise<(string[] | undefined)[]> {
  return Promise.all(
    units.map(async (u, i) => {
      if (!needsTensorHashes(u)) return undefined;
      const first = u.tensors[0]!.begin;
      return Promise.all(u.tensors.map(async (t) => (await hashBlob(store, digests[i]!, t.begin - first, t.end - first)).sha256));
    }),
  );
}

async function checkGitOid(store: ContentStore, f: SourcedFile, want: string, digest: string): Promise<void> {
  const { git: oid } = await hashBlob(store, digest, 0, f.size, gitBlobPrefix(f.size));
  if (oid !== want) throw new CakeError("E_DIGEST", `${f.source.what}: downloaded bytes have git oid ${oid}, the source says ${want}`);
}

/**
 * The check of one safetensors file against what its source says (sha256, or git oid): the file as
 * export rebuilds it (header + its units from the store), hashed on a hash worker unit by unit in
 * file order as the units land, so the last unit's arrival leaves only its own bytes to hash, not
 * the whole file.
 */
class FileCheck {
  private next = 0;
  private finished = false;
  /** The units fed so far, in order (a compressed one is read and sent piece by piece). */
  private feeding = Promise.resolve();
  private readonly hash: RunningHash;
  /** Indices into the plan's units of this file's units, in file order. */
  private readonly mine: number[];

  constructor(
    private readonly store: ContentStore,
    readonly f: SourcedFile,
    private readonly units: Unit[],
  ) {
    this.mine = units.flatMap((u, i) => (u.path === f.path ? [i] : [])).sort((a, b) => units[a]!.begin - units[b]!.begin);
    this.hash = runningHash(f.expect && "gitOid" in f.expect ? gitBlobPrefix(f.size) : undefined);
    this.hash.update([{ bytes: f.safetensors!.headerBytes }]);
  }

  /** Feeds the units now in the store in order; the check itself once the last one is in. */
  landed(digests: string[]): Promise<void> | undefined {
    while (this.next < this.mine.length && digests[this.mine[this.next]!] !== undefined) {
      const i = this.mine[this.next++]!;
      const [digest, size] = [digests[i]!, this.units[i]!.end - this.units[i]!.begin];
      this.feeding = this.feeding.then(() => feedBlob(this.store, digest, 0, size, this.hash));
    }
    this.feeding.catch(() => {}); // reported by finish
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
    const expect = f.expect!;
    await this.feeding;
    const { sha256: got, git: gitGot } = await this.hash.digest();
    const ok = "sha256" in expect ? got === expect.sha256 : gitGot === expect.gitOid;
    if (!ok) {
      const want = "sha256" in expect ? `sha256 ${expect.sha256}` : `git oid ${expect.gitOid}`;
      throw new CakeError("E_DIGEST", `${f.path}: the bytes read from ${f.source.what} hash to ${"sha256" in expect ? `sha256 ${got}` : `git oid ${gitGot}`}, not the ${want} its source names`);
    }
    f.sha256 = got;
  }
}
