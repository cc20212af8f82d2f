/**
 * `cake export`: rebuilds every original file of an artifact, byte for byte. Each file is written
 * to a temp file beside its target, hashed as it is written, checked against the recipe's sha256
 * (the Hub's LFS oid) and git oid, fsynced, and only then renamed into place: a failed or killed
 * export never leaves a wrong file under a real name.
 *
 * With an HF cache target the layout is huggingface_hub's own: blobs/<etag>, snapshots/<commit>/<path>
 * as relative symlinks to the blobs, refs/<revision> -> commit; HF_HUB_OFFLINE=1 loads it.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { CakeError } from "../errors.js";
import type { RecipeFile } from "../format/artifact.js";
import { gitBlobHasher } from "../format/git-oid.js";
import { safeJoin } from "../format/paths.js";
import { Pool } from "../transfer/pool.js";
import { silentProgress, type ProgressSink } from "../transfer/progress.js";
import type { ArtifactSource } from "./source.js";

export interface ExportOptions {
  progress?: ProgressSink;
  concurrency?: number;
}

let seq = 0;

/** The file's bytes in order: the header, then each blob (exactly its recorded size). */
async function* fileBytes(src: ArtifactSource, f: RecipeFile): AsyncGenerator<Buffer> {
  if (f.header !== undefined) yield Buffer.from(f.header, "base64");
  for (const d of f.digest !== undefined ? [f.digest] : f.parts!) {
    const want = src.recipe.blobs[d]!.size;
    let got = 0;
    for await (const b of src.openBlob(d)) {
      got += (b as Buffer).length;
      yield b as Buffer;
    }
    if (got !== want) throw new CakeError("E_SIZE", `${src.where}: blob ${d} for ${f.path} has ${got} bytes, the recipe says ${want}`);
  }
}

/** Writes one file of the recipe to `target` (atomically, verified). */
async function writeFile(src: ArtifactSource, f: RecipeFile, target: string, progress: ProgressSink): Promise<void> {
  await fsp.mkdir(path.dirname(target), { recursive: true });
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.cake-${process.pid}-${seq++}.tmp`);
  const sha = createHash("sha256");
  const git = f.gitOid ? gitBlobHasher(f.size) : undefined;
  let written = 0;
  const tap = async function* (chunks: AsyncIterable<Buffer>) {
    for await (const b of chunks) {
      sha.update(b);
      git?.update(b);
      written += b.length;
      progress.bytes(b.length);
      yield b;
    }
  };
  try {
    // A pipeline overlaps reading, hashing and writing; `flush` fsyncs before close.
    await pipeline(fileBytes(src, f), tap, fs.createWriteStream(tmp, { mode: 0o644, flush: true }));
    if (written !== f.size) throw new CakeError("E_SIZE", `${f.path}: rebuilt ${written} bytes, expected ${f.size}`);
    const got = sha.digest("hex");
    if (got !== f.sha256) throw new CakeError("E_DIGEST", `${f.path}: rebuilt file hashes to sha256 ${got}, expected ${f.sha256}`);
    const oid = git?.digest("hex");
    if (git && oid !== f.gitOid) throw new CakeError("E_DIGEST", `${f.path}: rebuilt file has git oid ${oid}, expected ${f.gitOid}`);
    await fsp.rename(tmp, target);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  progress.item();
}

function start(src: ArtifactSource, progress: ProgressSink) {
  progress.addTotal(src.recipe.files.reduce((n, f) => n + f.size, 0), src.recipe.files.length);
  return new Pool(4);
}

/** Every file under `out/<path>`. */
export async function exportTo(src: ArtifactSource, out: string, opts: ExportOptions = {}): Promise<string[]> {
  const progress = opts.progress ?? silentProgress;
  const pool = start(src, progress);
  await fsp.mkdir(out, { recursive: true });
  const targets = src.recipe.files.map((f) => safeJoin(out, f.path, "file path"));
  await Promise.all(src.recipe.files.map((f, i) => pool.run(() => writeFile(src, f, targets[i]!, progress))));
  progress.done();
  return targets;
}

/** huggingface_hub's cache folder name for a model repo. */
export const hfCacheRepoDir = (hubCache: string, repo: string) => path.join(hubCache, `models--${repo.replace(/\//g, "--")}`);

/** Into the HF cache at `hubCache` (= $HF_HOME/hub): the snapshot of `commit`, `revision` pointing at it. */
export async function exportToHfCache(src: ArtifactSource, hubCache: string, repo: string, commit: string, revision: string, opts: ExportOptions = {}): Promise<string> {
  if (!/^[a-f0-9]{40}$/.test(commit)) throw new CakeError("E_RECIPE", `${src.where}: no Hub commit to name the snapshot`);
  const progress = opts.progress ?? silentProgress;
  const pool = start(src, progress);
  const repoDir = hfCacheRepoDir(hubCache, repo);
  const snapshot = path.join(repoDir, "snapshots", commit);
  await fsp.mkdir(path.join(repoDir, "blobs"), { recursive: true });
  await Promise.all(
    src.recipe.files.map((f) =>
      pool.run(async () => {
        const etag = f.lfs || !f.gitOid ? f.sha256 : f.gitOid;
        const blob = path.join(repoDir, "blobs", etag);
        if (!fs.existsSync(blob)) await writeFile(src, f, blob, progress);
        else progress.bytes(f.size);
        const link = safeJoin(snapshot, f.path, "file path");
        await fsp.mkdir(path.dirname(link), { recursive: true });
        await fsp.rm(link, { force: true });
        await fsp.symlink(path.relative(path.dirname(link), blob), link);
      }),
    ),
  );
  if (revision !== commit) {
    const refFile = safeJoin(path.join(repoDir, "refs"), revision, "revision");
    await fsp.mkdir(path.dirname(refFile), { recursive: true });
    await fsp.writeFile(refFile, commit);
  }
  progress.done();
  return snapshot;
}
