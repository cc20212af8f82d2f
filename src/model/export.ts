/**
 * `cake export`: rebuilds every original file of an artifact, byte for byte. All files are written
 * in the export's private temp folder (export-temp.ts) and renamed into place once all are complete:
 * a failed or killed export leaves nothing new under a real name, and a link planted at a target's
 * name is replaced, never written through. Into the HF cache, each file lands when it is complete
 * (its blobs are named by their hashes, a snapshot link by its file).
 *
 * Hashing: store blobs hash to their names (checked at ingest), and a Hub pull checks every rebuilt
 * file against the Hub's LFS oid / git oid, so the store records the manifest as verified and
 * export copies without hashing, as fast as the disk allows (whole-file blobs in the kernel,
 * copy_file_range or a reflink). An artifact the store has not checked that way (pulled from a
 * registry, loaded from an archive, an oras directory) is hashed while written and each file must
 * match the recipe's sha256 and git oid; after a clean export the store remembers. `verify: true`
 * always hashes. Like cp, export does not fsync: the store's own writes are the durable ones.
 *
 * With an HF cache target the layout is huggingface_hub's own: blobs/<etag>, snapshots/<commit>/<path>
 * as relative symlinks to the blobs, refs/<revision> -> commit; HF_HUB_OFFLINE=1 loads it.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { CakeError } from "../errors.js";
import type { RecipeFile } from "../format/artifact.js";
import { gitBlobHasher } from "../format/git-oid.js";
import { safeJoin } from "../format/paths.js";
import { hashParts } from "../store/hasher.js";
import { Pool } from "../transfer/pool.js";
import { silentProgress, type ProgressSink } from "../transfer/progress.js";
import { makeDirsBelow, makeExportTemp, removeStaleExportTemps } from "./export-temp.js";
import { fileRangePieces, fileSegments } from "./file-range.js";
import type { ArtifactSource } from "./source.js";

export interface ExportOptions {
  progress?: ProgressSink;
  /** Hash every file against its recipe sha256 / git oid even if the store checked it before (and, into the HF cache, the blobs it holds already). */
  verify?: boolean;
  /** Told what the export repaired on its way (a damaged blob in the HF cache); silent by default. */
  warn?: (line: string) => void;
  /** Cancels the export: files being written stop and their temp files go; nothing half-written is left. */
  signal?: AbortSignal;
}

/**
 * Bytes per read/write when copying a blob through user space (two buffers per file being written).
 * 2 MiB: a 518 MB export took 0.57 s with 1-2 MiB, 0.64 s with 512 KiB, 0.71-0.76 s with 4 MiB
 * (interleaved runs; a buffer the CPU caches hold is written out faster than one it must refetch).
 */
const COPY_BUFFER = 2 << 20;
/** Files written at once: reads and writes of one overlap the hashing or copying of the others. */
const FILES_AT_ONCE = 4;

/** Called with each piece of the file as it is written; throws to stop the file (another failed). */
type Feed = (b: Buffer) => void;

/** File `f`'s bytes in order: its safetensors header, then each blob, exactly its recipe size. */
function filePieces(src: ArtifactSource, f: RecipeFile, take: () => Buffer): AsyncGenerator<Buffer> {
  // Export reads whole blobs: the source's openBlob is the range [0, size) the pieces ask for.
  const reader = { openBlob: (d: string) => src.openBlob(d), rawFile: (d: string) => src.blobFile?.(d) };
  return fileRangePieces(reader, fileSegments(src.recipe, f), 0, f.size, src.where, { take, file: f.path, missing: (d, err) => missingBlob(src, d, f, err) });
}

/** A blob gone from under the source (removed by hand, a store damaged) as one line that says what to do; any other error as it is. */
function missingBlob(src: ArtifactSource, d: string, f: RecipeFile, err: unknown): unknown {
  if ((err as NodeJS.ErrnoException).code !== "ENOENT") return err;
  const fix = src.manifest ? `pull ${src.where} again` : "oras pull it again";
  return new CakeError("E_NOT_FOUND", `${src.where}: blob ${d} (of ${f.path}) is missing: ${fix}`, { cause: err });
}

/**
 * `pieces`, with the next one always on its way while the caller handles the current one: the read
 * of piece k+1 overlaps the write of piece k (one read then one write at a time copies at half the
 * speed). A piece's buffer may be reused once the piece after it has been asked for, so `pieces`
 * needs two buffers to alternate.
 */
async function* readAhead(pieces: AsyncGenerator<Buffer>): AsyncGenerator<Buffer> {
  // The read in flight may fail while the caller is still writing: handled at once (not an
  // unhandled rejection), still thrown where it is awaited.
  const ask = () => {
    const p = pieces.next();
    p.catch(() => undefined);
    return p;
  };
  let next = ask();
  try {
    for (;;) {
      const r = await next;
      if (r.done) return;
      next = ask();
      yield r.value;
    }
  } finally {
    // Stopped early (a write failed, another file failed): let the read in flight end, close the file.
    await next.catch(() => undefined);
    await pieces.return(undefined);
  }
}

async function writeAll(out: fsp.FileHandle, b: Buffer, at: number): Promise<void> {
  for (let done = 0; done < b.length; ) done += (await out.write(b, done, b.length - done, at + done)).bytesWritten;
}

/** Writes one file of the recipe to `target` by way of `tmp`, a new name in the private temp folder (hashed and checked when `verify`). */
async function writeFile(src: ArtifactSource, f: RecipeFile, tmp: string, target: string, progress: ProgressSink, verify: boolean, bufs: () => [Buffer, Buffer], stop: AbortSignal): Promise<void> {
  const sha = verify ? createHash("sha256") : undefined;
  const git = verify && f.gitOid ? gitBlobHasher(f.size) : undefined;
  const feed: Feed = (b) => {
    stop.throwIfAborted();
    sha?.update(b);
    git?.update(b);
    progress.bytes(b.length);
  };
  try {
    let written: number;
    const whole = verify || f.digest === undefined ? undefined : src.blobFile?.(f.digest);
    if (whole !== undefined && (await sizeOf(whole)) === f.size) {
      // A whole file that is one blob stored as it is: the kernel copies it (copy_file_range, or a reflink where the filesystem can).
      await fsp.copyFile(whole, tmp, fs.constants.COPYFILE_EXCL | fs.constants.COPYFILE_FICLONE).catch((err: NodeJS.ErrnoException) => {
        throw err.path === whole ? missingBlob(src, f.digest!, f, err) : err;
      });
      await fsp.chmod(tmp, 0o644); // store blobs are read-only; the user's copy is not
      progress.bytes(f.size);
      written = f.size;
    } else {
      const out = await fsp.open(tmp, "wx", 0o644);
      try {
        written = 0;
        let k = 0;
        const take = () => bufs()[(k ^= 1)]!;
        for await (const b of readAhead(filePieces(src, f, take))) {
          feed(b);
          await writeAll(out, b, written);
          written += b.length;
        }
      } finally {
        await out.close();
      }
    }
    if (written !== f.size) throw new CakeError("E_SIZE", `${f.path}: rebuilt ${written} bytes, expected ${f.size}`);
    if (sha) {
      const got = sha.digest("hex");
      if (got !== f.sha256) throw new CakeError("E_DIGEST", `${f.path}: rebuilt file hashes to sha256 ${got}, expected ${f.sha256}`);
    }
    const oid = git?.digest("hex");
    if (git && oid !== f.gitOid) throw new CakeError("E_DIGEST", `${f.path}: rebuilt file has git oid ${oid}, expected ${f.gitOid}`);
    stop.throwIfAborted();
    await fsp.rename(tmp, target);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  progress.item();
}

const sizeOf = (file: string) => fsp.stat(file).then((s) => s.size, () => -1);

/**
 * Runs `each` for every file, FILES_AT_ONCE at a time; `each` writes the file where it wants with
 * the `write` it is given (two copy buffers of its own, by way of `temp`, the export's private temp
 * folder), or skips it (it counts as done). Records a clean verification at the end.
 */
async function forEachFile(src: ArtifactSource, opts: ExportOptions, temp: string, each: (f: RecipeFile, i: number, write: (target: string) => Promise<void>) => Promise<void>): Promise<void> {
  const progress = opts.progress ?? silentProgress;
  const verify = opts.verify === true || src.verified !== true;
  progress.addTotal(src.recipe.files.reduce((n, f) => n + f.size, 0), src.recipe.files.length);
  const pool = new Pool(FILES_AT_ONCE);
  const free: [Buffer, Buffer][] = [];
  // The first failure stops the other files (each removes its temp file) before export reports it;
  // so does the caller's signal.
  const stop = new AbortController();
  const onCancel = () => stop.abort(opts.signal!.reason);
  if (opts.signal?.aborted) onCancel();
  opts.signal?.addEventListener("abort", onCancel, { once: true });
  const settled = await Promise.allSettled(
    src.recipe.files.map((f, i) =>
      pool.run(async () => {
        stop.signal.throwIfAborted();
        let bufs: [Buffer, Buffer] | undefined;
        const take = () => (bufs ??= free.pop() ?? [Buffer.allocUnsafe(COPY_BUFFER), Buffer.allocUnsafe(COPY_BUFFER)]);
        let wrote = false;
        try {
          await each(f, i, (target) => {
            wrote = true;
            return writeFile(src, f, path.join(temp, String(i)), target, progress, verify, take, stop.signal);
          });
        } catch (err) {
          if (!stop.signal.aborted) stop.abort(err);
          throw err;
        } finally {
          if (bufs) free.push(bufs);
        }
        if (!wrote) {
          progress.bytes(f.size);
          progress.item();
        }
      }),
    ),
  );
  opts.signal?.removeEventListener("abort", onCancel);
  if (settled.some((r) => r.status === "rejected") || stop.signal.aborted) throw stop.signal.reason;
  if (verify) await src.markVerified?.();
  progress.done();
}

/**
 * Runs `fn` with a private temp folder in `dir`, removed after; first creates `targetDirs` (below
 * `dir`, never through a link) and removes the temp files that killed exports left in them.
 */
async function withExportTemp<T>(dir: string, targetDirs: string[], fn: (temp: string) => Promise<T>): Promise<T> {
  await makeDirsBelow(dir, targetDirs);
  await removeStaleExportTemps([dir, ...targetDirs]);
  const temp = await makeExportTemp(dir);
  try {
    return await fn(temp);
  } finally {
    await fsp.rm(temp, { recursive: true, force: true });
  }
}

export interface ExportToOptions extends ExportOptions {
  /** Into a folder that holds files already: files of the same names are replaced (each whole, at once). */
  force?: boolean;
}

/**
 * Every file under `out/<path>`. All of them are written and checked in a private temp folder
 * first, so a failure (a missing or damaged blob, a full disk, a cancel) leaves nothing new behind:
 * a new `out` is that folder renamed into place; into an existing one (empty, or with `force`)
 * the files are renamed in one by one once all are complete, each whole.
 */
export async function exportTo(src: ArtifactSource, out: string, opts: ExportToOptions = {}): Promise<string[]> {
  const targets = src.recipe.files.map((f) => safeJoin(out, f.path, "file path"));
  const st = await fsp.stat(out).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    if (err.code === "ENOTDIR") throw new CakeError("E_USAGE", `${out}: a file stands on its path: export into a folder`, { cause: err });
    throw err;
  });
  if (st && !st.isDirectory()) throw new CakeError("E_USAGE", `${out} is a file: export into a new or empty folder`);
  if (!st) {
    await exportIntoNewFolder(src, out, opts);
    return targets;
  }
  await removeStaleExportTemps([out, ...targets.map((t) => path.dirname(t))]);
  if (!opts.force && (await fsp.readdir(out)).length > 0) {
    throw new CakeError("E_USAGE", `${out}: folder is not empty: export into a new folder, or add --force to replace its files of the same names`);
  }
  await refuseBlockedTargets(out, targets);
  await withExportTemp(out, [], async (temp) => {
    const staged = await stageFiles(src, opts, temp);
    await makeDirsBelow(out, targets.map((t) => path.dirname(t)));
    for (const [i, t] of targets.entries()) await fsp.rename(staged[i]!, t);
  });
  return targets;
}

/** A new folder `out`: staged beside it (in the same parent, so one rename), then renamed into place; a parent it had to create goes again on failure. */
async function exportIntoNewFolder(src: ArtifactSource, out: string, opts: ExportOptions): Promise<void> {
  const parent = path.dirname(path.resolve(out));
  const made = await fsp.mkdir(parent, { recursive: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOTDIR" || err.code === "EEXIST") throw new CakeError("E_USAGE", `${out}: a file stands on its path: export into a folder`, { cause: err });
    throw err;
  });
  try {
    await removeStaleExportTemps([parent]);
    const temp = await makeExportTemp(parent);
    try {
      await stageFiles(src, opts, temp);
      await fsp.rename(path.join(temp, STAGE), out).catch((err: NodeJS.ErrnoException) => {
        if (err.code === "ENOTEMPTY" || err.code === "EEXIST") throw new CakeError("E_IO", `${out}: created by someone else while exporting: export again`, { cause: err });
        throw err;
      });
    } finally {
      await fsp.rm(temp, { recursive: true, force: true });
    }
  } catch (err) {
    if (made) await fsp.rm(made, { recursive: true, force: true });
    throw err;
  }
}

/** The folder in an export's temp folder where the files are laid out as they will be in `out`. */
const STAGE = "files";

/** Writes and checks every file under `temp/files/<path>` (folders with the user's default mode); their paths, in recipe order. */
async function stageFiles(src: ArtifactSource, opts: ExportOptions, temp: string): Promise<string[]> {
  const stage = path.join(temp, STAGE);
  await fsp.mkdir(stage);
  const staged = src.recipe.files.map((f) => safeJoin(stage, f.path, "file path"));
  await makeDirsBelow(stage, staged.map((t) => path.dirname(t)));
  await forEachFile(src, opts, temp, (_f, i, write) => write(staged[i]!));
  return staged;
}

/** Before anything moves: a folder where a file must land, or a file where a folder must be, would stop the export half-way. */
async function refuseBlockedTargets(out: string, targets: string[]): Promise<void> {
  const isA = async (p: string) => fsp.lstat(p).then((st) => (st.isDirectory() ? "folder" : st.isSymbolicLink() ? "link" : "file"), () => undefined);
  for (const t of targets) {
    if ((await isA(t)) === "folder") throw new CakeError("E_USAGE", `${t} is a folder where the export puts a file: move it away and export again`);
    let dir = out;
    for (const part of path.relative(out, path.dirname(t)).split(path.sep).filter(Boolean)) {
      dir = path.join(dir, part);
      if ((await isA(dir)) === "file") throw new CakeError("E_USAGE", `${dir} is a file where the export puts a folder: move it away and export again`);
    }
  }
}

/** huggingface_hub's cache folder name for a model repo. */
export const hfCacheRepoDir = (hubCache: string, repo: string) => path.join(hubCache, `models--${repo.replace(/\//g, "--")}`);

/** Into the HF cache at `hubCache` (= $HF_HOME/hub): the snapshot of `commit`, `revision` pointing at it. */
export async function exportToHfCache(src: ArtifactSource, hubCache: string, repo: string, commit: string, revision: string, opts: ExportOptions = {}): Promise<string> {
  if (!/^[a-f0-9]{40}$/.test(commit)) throw new CakeError("E_RECIPE", `${src.where}: no Hub commit to name the snapshot`);
  const repoDir = hfCacheRepoDir(hubCache, repo);
  const snapshot = path.join(repoDir, "snapshots", commit);
  const blobs = path.join(repoDir, "blobs");
  const links = src.recipe.files.map((f) => safeJoin(snapshot, f.path, "file path"));
  const refFile = revision !== commit ? safeJoin(path.join(repoDir, "refs"), revision, "revision") : undefined;
  const dirs = [blobs, ...links.map((l) => path.dirname(l)), ...(refFile ? [path.dirname(refFile)] : [])];
  await withExportTemp(repoDir, dirs, async (temp) => {
    await forEachFile(src, opts, temp, async (f, i, write) => {
      const etag = f.lfs || !f.gitOid ? f.sha256 : f.gitOid;
      const blob = path.join(blobs, etag);
      if (!(await cachedBlobHolds(blob, f, opts))) await write(blob);
      const link = links[i]!;
      await fsp.rm(link, { force: true });
      await fsp.symlink(path.relative(path.dirname(link), blob), link);
    });
    if (refFile) {
      const tmp = path.join(temp, "ref");
      await fsp.writeFile(tmp, commit, { flag: "wx" });
      await fsp.rename(tmp, refFile);
    }
  });
  return snapshot;
}

/**
 * Whether the HF cache's `blob` already holds file `f`: a plain file of its size and, with
 * `verify`, hashing to its sha256. Anything else found there (another size, a link, bytes that hash
 * otherwise) is replaced by the caller, and said through `warn`.
 */
async function cachedBlobHolds(blob: string, f: RecipeFile, opts: ExportOptions): Promise<boolean> {
  const st = await fsp.lstat(blob).catch(() => undefined);
  if (!st) return false;
  let wrong: string;
  if (!st.isFile()) wrong = "is not a plain file";
  else if (st.size !== f.size) wrong = `has ${st.size} bytes, not ${f.size}`;
  else {
    if (opts.verify !== true) return true;
    const { sha256 } = await hashParts({ parts: [{ file: blob, start: 0, end: f.size }] });
    if (sha256 === f.sha256) return true;
    wrong = `hashes to sha256 ${sha256}, not ${f.sha256}`;
  }
  opts.warn?.(`HF cache blob ${blob} (${f.path}) ${wrong}: replaced with the model's own bytes`);
  return false;
}
