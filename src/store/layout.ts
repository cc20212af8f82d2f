/**
 * The local store: an OCI image layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
 * at $CAKE_HOME (default ~/.cache/cake), readable by `skopeo copy oci:` and `oras copy --from-oci-layout`.
 *
 *   oci-layout, index.json          the layout; index.json's manifests with a dev.cake.ref are the store's
 *                                   tags (entries other tools wrote are kept as they are, and gc keeps what they reach)
 *   blobs/sha256/<hex>              content, read-only, always hashing to its name
 *   ingest/                         blobs being written (partial files + journals, locks)
 *   cake/ranges/<file-key>          which blob holds which byte range of a Hub file (resume, re-pull)
 *   cake/leases/                    live cake processes; gc refuses while another holds one
 *   cake/gc.lock                    gc is running: a new lease waits for its end
 *   cake/verified/<manifest-hex>    every file of this manifest was rebuilt and matched its recipe sha256
 *   cake/compressed/<hex>           a blob kept compressed instead of in blobs/ (compressed.ts); read transparently
 *
 * A blob becomes visible only by rename after its bytes were hashed and checked. This file keeps the
 * blobs and ingests; the tags (index.json) are tags.ts, the records about blobs records.ts, gc and
 * leases gc.ts, and what readers outside the store may use is content.ts.
 */
import fs from "node:fs";
import fsp, { type FileHandle } from "node:fs/promises";
import type { ContentStore } from "./content.js";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { sha256Digest } from "../digest.js";
import { CakeError } from "../errors.js";
import { envPath } from "../paths-env.js";
import { DOCUMENT_LIMIT } from "../format/artifact.js";
import { successors, type Successors } from "../format/graph.js";
import { DIGEST_RE, MANIFEST_LIMIT, hexOf, type Descriptor } from "../format/oci.js";
import { atomicWrite, writeSynced } from "./atomic-write.js";
import { Ingest } from "./ingest.js";
import { withLock } from "./lock.js";
import { tempPath } from "./pid.js";
import { collectGarbage, takeLease } from "./gc.js";
import { GuessMisses, LocationRecords, RangeRecords, type RangeRecord } from "./records.js";
import { removeFile } from "./remove.js";
import { CompressedBlobs, isMissing, syncDir } from "./compressed.js";
import { TagIndex, emptyIndex, type Tag } from "./tags.js";
import { readPieces } from "./read-pieces.js";

export function defaultStoreDir(): string {
  return envPath("CAKE_HOME") ?? path.join(os.homedir(), ".cache", "cake");
}

export class Store implements ContentStore {
  readonly root: string;
  private ready?: Promise<void>;
  private readonly localLocks = new Map<string, Promise<unknown>>();

  private readonly ranges: RangeRecords;
  private readonly locationRecords: LocationRecords;
  private readonly misses: GuessMisses;
  private readonly compressed: CompressedBlobs;
  private readonly index: TagIndex;
  /** Blobs this process found compression would not make smaller: not tried again. */
  private readonly notSmaller = new Set<string>();

  constructor(root = defaultStoreDir()) {
    this.root = path.resolve(root);
    this.ranges = new RangeRecords(this.p("cake", "ranges"));
    this.locationRecords = new LocationRecords(this.p("cake", "locations"));
    this.misses = new GuessMisses(this.p("cake", "guess-misses"));
    this.compressed = new CompressedBlobs(this.p("cake", "compressed"));
    this.index = new TagIndex(this.p("index.json"), this.p("cake", "index.lock"));
  }

  private p(...parts: string[]) {
    return path.join(this.root, ...parts);
  }

  /** Creates the layout if missing (idempotent, safe under concurrency). */
  init(): Promise<void> {
    this.ready ??= (async () => {
      for (const d of ["blobs/sha256", "ingest", "cake/ranges", "cake/leases", "cake/verified", "cake/compressed"]) await fsp.mkdir(this.p(d), { recursive: true });
      await this.writeIfMissing("oci-layout", JSON.stringify({ imageLayoutVersion: "1.0.0" }));
      await this.writeIfMissing("index.json", JSON.stringify(emptyIndex()));
    })();
    return this.ready;
  }

  private async writeIfMissing(name: string, content: string) {
    if (fs.existsSync(this.p(name))) return;
    await atomicWrite(this.p(name), content);
  }

  blobPath(digest: string): string {
    if (!DIGEST_RE.test(digest)) throw new CakeError("E_DIGEST", `not a sha256 digest: ${digest}`);
    return this.p("blobs", "sha256", hexOf(digest));
  }

  /**
   * Whether every file of the manifest `digest` was rebuilt from the store's blobs and matched its
   * recipe's sha256 (at a Hub pull, against the Hub; or at an export). Blobs never change under
   * their names, so the check holds for as long as the manifest is here.
   */
  isVerified(digest: string): Promise<boolean> {
    return fsp.access(this.p("cake", "verified", hexOf(digest))).then(
      () => true,
      () => false,
    );
  }

  async markVerified(digest: string): Promise<void> {
    await this.init();
    // Its existence is the mark: created, never opened again (a link planted there is not written through).
    await fsp.writeFile(this.p("cake", "verified", hexOf(digest)), "", { flag: "wx" }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "EEXIST") throw err;
    });
  }

  /** The blob's size (of its raw bytes), or undefined when the store lacks it. */
  async blobSize(digest: string): Promise<number | undefined> {
    return (await this.blobSizes(digest))?.raw;
  }

  /** The blob's raw size and the bytes it takes on disk (less when it is stored compressed); undefined when the store lacks it. */
  async blobSizes(digest: string): Promise<{ raw: number; stored: number; compressed: boolean } | undefined> {
    // A stat, synchronous: asked once or twice per blob of a transfer (see store/ingest.ts).
    const st = fs.statSync(this.blobPath(digest), { throwIfNoEntry: false });
    if (st) return { raw: st.size, stored: st.size, compressed: false };
    const z = await this.compressed.sizes(digest).catch(() => undefined);
    return z && { ...z, compressed: true };
  }

  async hasBlob(digest: string, size?: number): Promise<boolean> {
    const s = await this.blobSize(digest);
    return s !== undefined && (size === undefined || s === size);
  }

  /** A stream of the blob's raw bytes [start, end): read as they are, or decoded (see compressed.ts). */
  openBlob(digest: string, start = 0, end?: number): Readable {
    return Readable.from(this.blobPieces(digest, start, end), { objectMode: false, highWaterMark: 1 << 20 });
  }

  private async *blobPieces(digest: string, start: number, end: number | undefined): AsyncGenerator<Buffer> {
    let fh: FileHandle;
    try {
      fh = await fsp.open(this.blobPath(digest), "r");
    } catch (err) {
      // Opened, a file stays readable whatever happens to its name: a compress that runs meanwhile
      // removes the raw file only after its compressed form is in place.
      const z = isMissing(err) ? await this.compressed.open(digest) : undefined;
      if (!z) throw err;
      try {
        yield* z.read(start, Math.min(end ?? z.rawSize, z.rawSize));
      } finally {
        await z.close();
      }
      return;
    }
    yield* readPieces(fh, start, end);
  }

  /** Bytes [start, end) of a blob, whole (proof windows, small reads). */
  async readRange(digest: string, start: number, end: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const b of this.openBlob(digest, start, end)) parts.push(b as Buffer);
    const out = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    if (out.length !== end - start) throw new CakeError("E_SIZE", `blob ${digest} ends before byte ${end}`);
    return out;
  }

  /**
   * The blob's file when it is stored as it is (see ContentStore.rawFile); undefined when it is
   * stored compressed (or missing), and callers read it through openBlob.
   */
  rawFile(digest: string): string | undefined {
    const file = this.blobPath(digest);
    return fs.existsSync(file) ? file : undefined;
  }

  async readBlob(digest: string, limit = DOCUMENT_LIMIT): Promise<Buffer> {
    const size = await this.blobSize(digest);
    if (size === undefined) throw new CakeError("E_NOT_FOUND", `blob ${digest} is not in the store ${this.root}`);
    if (size > limit) throw new CakeError("E_SIZE", `blob ${digest} is ${size} bytes, more than ${limit}`);
    return this.readRange(digest, 0, size);
  }

  /** Stores small bytes (manifests, configs, recipes) under their digest. */
  async putBytes(bytes: Buffer): Promise<string> {
    await this.init();
    const digest = sha256Digest(bytes);
    if (await this.hasBlob(digest, bytes.length)) return digest;
    const tmp = tempPath(this.p("ingest", "bytes"));
    await writeSynced(tmp, bytes);
    await this.publish(tmp, digest);
    return digest;
  }

  /** Renames a checked temp file into blobs/ as read-only. */
  private async publish(tmp: string, digest: string) {
    fs.chmodSync(tmp, 0o444);
    fs.renameSync(tmp, this.blobPath(digest));
  }

  // ---- the compressed form (src/store/compressed.ts) ----

  /**
   * Stores blob `digest` compressed (`dtype`: the tensor's, or undefined for a pack or a whole
   * file), crash-safe: the raw file goes only once the compressed one is fsynced and decodes to the
   * digest. "kept raw" when compression would not make it smaller, "missing" when the store lacks it.
   * `keepRaw`: the compressed form is written beside the raw file, which readers then still use
   * (a pull in progress, whose receiving thread the work then stays off); a later compressBlob
   * removes the raw file.
   */
  async compressBlob(digest: string, dtype: string | undefined, opts: { keepRaw?: boolean } = {}): Promise<"compressed" | "already" | "kept raw" | "missing"> {
    await this.init();
    if (this.notSmaller.has(digest)) return "kept raw";
    const raw = this.blobPath(digest);
    const st = await fsp.stat(raw).catch(() => undefined);
    if (!st) return (await this.compressed.sizes(digest)) ? "already" : "missing";
    // A form written beside the raw file (keepRaw; a compress killed after its rename) was checked before its rename.
    const done = (await this.compressed.sizes(digest).catch(() => undefined)) !== undefined;
    // Another process may compress it at the same time and remove the raw file under this one.
    const written = done ? 0 : await this.compressed.write(raw, digest, st.size, dtype, opts.keepRaw === true).catch(async (err: unknown) => (isMissing(err) && (await this.compressed.sizes(digest)) ? 0 : Promise.reject(err)));
    if (written === undefined) {
      this.notSmaller.add(digest);
      return "kept raw";
    }
    if (!opts.keepRaw) await removeFile(raw);
    return "compressed";
  }

  /** Stores blob `digest` as it is again (decoded, checked against its digest, fsynced, renamed), then removes its compressed form. */
  async decompressBlob(digest: string): Promise<"decompressed" | "already" | "missing"> {
    await this.init();
    const sizes = await this.blobSizes(digest);
    if (!sizes) return "missing";
    if (!sizes.compressed) {
      await this.compressed.remove(digest);
      return "already";
    }
    const tmp = tempPath(this.p("ingest", "bytes"));
    const out = await fsp.open(tmp, "wx");
    try {
      await this.compressed.decodeTo(digest, out);
      await out.close();
      await this.publish(tmp, digest);
      await syncDir(this.p("blobs", "sha256"));
    } finally {
      await out.close().catch(() => {});
      await removeFile(tmp);
    }
    await this.compressed.remove(digest);
    return "decompressed";
  }

  /**
   * Runs `fn` with the ingest of `key` (a digest hex, or a Hub file range) held exclusively by this
   * process, so two pulls never write the same partial file. `fn` sees an Ingest opened for resume.
   */
  async withIngest<T>(key: string, size: number, fn: (ing: Ingest) => Promise<T>): Promise<T> {
    await this.init();
    if (!/^[A-Za-z0-9._-]+$/.test(key)) throw new CakeError("E_IO", `bad ingest key ${key}`);
    // In-process: serialize on the key; across processes: the lock file.
    const prev = this.localLocks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chain = prev.then(() => mine);
    this.localLocks.set(key, chain);
    await prev.catch(() => {});
    try {
      return await withLock(this.p("ingest", `${key}.lock`), `ingest ${key}`, async () => {
        const ing = await new Ingest(this.p("ingest", `${key}.partial`), this.p("ingest", `${key}.journal`), size, key).open();
        try {
          return await fn(ing);
        } finally {
          await ing.close();
        }
      }, 24 * 3600_000);
    } finally {
      release();
      if (this.localLocks.get(key) === chain) this.localLocks.delete(key);
    }
  }

  /** Keys of the blobs being written (partial files in ingest/): what killed transfers left to resume. */
  async ingestKeys(): Promise<string[]> {
    const names = await fsp.readdir(this.p("ingest")).catch(() => [] as string[]);
    return names.filter((n) => n.endsWith(".partial")).map((n) => n.slice(0, -".partial".length));
  }

  /**
   * Makes a finished ingest a blob. `expected`, when given, must equal the bytes' digest, else
   * the partial data is discarded and E_DIGEST thrown: nothing is visible under a wrong name.
   */
  async commit(ing: Ingest, expected?: string, what = ing.key): Promise<string> {
    const digest = await ing.finish();
    if (expected && digest !== expected) {
      await ing.discard();
      throw new CakeError("E_DIGEST", `${what}: content hashes to ${digest}, not ${expected}`);
    }
    if (await this.hasBlob(digest, ing.size)) await removeFile(ing.partialPath);
    else await this.publish(ing.partialPath, digest);
    await removeFile(ing.journalPath);
    return digest;
  }

  // ---- records: Hub ranges and registry locations (src/store/records.ts) ----

  /** What the store knows of a Hub file's bytes, range by range: the blob and the repos that serve it. */
  knownRanges(fileKey: string): Promise<Map<string, RangeRecord>> {
    return this.ranges.known(fileKey);
  }

  /** Records that `repo` served bytes [begin, end) of the file, held by blob `digest`. */
  recordRange(fileKey: string, begin: number, end: number, digest: string, repo: string): Promise<void> {
    return this.ranges.record(fileKey, begin, end, digest, repo);
  }

  forgetRanges(fileKey: string): Promise<void> {
    return this.ranges.forget(fileKey);
  }

  /** Pairs "<file key> <model>" whose guessed tensors were wrong (src/model/speculate.ts). */
  guessMisses(): Promise<Set<string>> {
    return this.misses.all();
  }

  recordGuessMiss(pair: string): Promise<void> {
    return this.misses.record(pair);
  }

  /** Records that `repository` on `registry` holds these blobs. */
  recordLocations(registry: string, repository: string, digests: readonly string[]): Promise<void> {
    return this.locationRecords.record(registry, repository, digests);
  }

  /** digest -> repositories of `registry` known to hold it. */
  locations(registry: string): Promise<Map<string, string[]>> {
    return this.locationRecords.of(registry);
  }

  // ---- tags (index.json: src/store/tags.ts) ----

  /** Changes whenever a tag changes (index.json's mtime): lets callers cache what they derive from tags. */
  async tagsVersion(): Promise<number> {
    await this.init();
    return this.index.version();
  }

  /**
   * cake's tags: the index.json entries with a `dev.cake.ref`. Entries other tools wrote (skopeo,
   * oras: no annotations, no cake reference, any media type) are not cake models; they stay as they are.
   */
  async tags(): Promise<Tag[]> {
    await this.init();
    return this.index.list();
  }

  async resolve(ref: string): Promise<Descriptor | undefined> {
    return (await this.tags()).find((t) => t.ref === ref)?.descriptor;
  }

  /**
   * Points `ref` at a manifest (replacing what it pointed at). `refName` is the OCI ref.name other
   * tools use (`skopeo copy oci:$CAKE_HOME:<refName>`).
   */
  async tag(ref: string, refName: string, desc: Descriptor, extra: Record<string, string> = {}): Promise<void> {
    await this.init();
    await this.index.set(ref, refName, desc, extra);
  }

  async untag(ref: string): Promise<boolean> {
    await this.init();
    return this.index.remove(ref);
  }

  // ---- leases and gc ----

  /** Marks this process as working in the store until the returned function is called (see src/store/gc.ts). */
  async lease(): Promise<() => Promise<void>> {
    await this.init();
    return takeLease(this.root, (...parts) => this.p(...parts));
  }

  /** Runs `fn` under a lease: what it writes or relies on before it tags is safe from gc. */
  async withLease<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.lease();
    try {
      return await fn();
    } finally {
      await release();
    }
  }

  /** See src/store/gc.ts. `successorsOf` reads what a manifest or index points at. */
  async gc(successorsOf: Successors = successors): Promise<{ removed: number; bytes: number; kept: number }> {
    await this.init();
    return collectGarbage(
      {
        root: this.root,
        at: (...parts) => this.p(...parts),
        entries: () => this.index.entries(),
        readManifest: (digest) => this.readBlob(digest, MANIFEST_LIMIT),
        rewrite: atomicWrite,
      },
      successorsOf,
    );
  }
}
