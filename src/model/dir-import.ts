/**
 * A local folder (safetensors + other files) into the store as a cake artifact: the same conversion
 * as a Hub pull (src/model/convert.ts), each file a local RangeSource.
 * `cake push ./my-model …` starts here.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { CakeError } from "../errors.js";
import type { Artifact } from "../format/artifact.js";
import { gitBlobHasher } from "../format/git-oid.js";
import { CAKE_DIR, checkRelativePath } from "../format/paths.js";
import { sortFiles } from "../format/plan.js";
import type { Store } from "../store/layout.js";
import type { ProgressSink } from "../transfer/progress.js";
import { convertFiles, type SourcedFile } from "./convert.js";
import { localFileSource, readSafetensorsHeader } from "./range-source.js";
import { ociRefName } from "./ref.js";

/** Every regular file below `dir` (relative, '/'-separated), skipping VCS folders. */
async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  const rec = async (rel: string) => {
    for (const e of await fsp.readdir(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (e.name === ".git" || e.name === ".cache" || (rel === "" && e.name === CAKE_DIR)) continue;
        await rec(r);
      } else if (e.isFile()) out.push(r);
    }
  };
  await rec("");
  return out;
}

async function hashFile(file: string, size: number): Promise<{ sha256: string; gitOid: string }> {
  const sha = createHash("sha256");
  const git = gitBlobHasher(size);
  for await (const b of fs.createReadStream(file, { highWaterMark: 1 << 20 })) {
    sha.update(b as Buffer);
    git.update(b as Buffer);
  }
  return { sha256: sha.digest("hex"), gitOid: git.digest("hex") };
}

/**
 * Imports the folder `dir`. `tag`: a store reference to point at it, tagged under the same lease as
 * the import, so that no `cake gc` finds its blobs untagged in between.
 */
export async function importDir(dir: string, store: Store, opts: { progress?: ProgressSink; concurrency?: number; tag?: string } = {}): Promise<Artifact & { digest: string }> {
  const st = await fsp.stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new CakeError("E_NOT_FOUND", `${dir}: not a directory`);
  const files: SourcedFile[] = [];
  for (const rel of await walk(dir)) {
    checkRelativePath(rel, `${dir} file`);
    const abs = path.join(dir, ...rel.split("/"));
    const size = (await fsp.stat(abs)).size;
    const hashes = await hashFile(abs, size);
    const source = localFileSource(abs, rel, `local-${hashes.sha256}`, size);
    // Hashed just now: a whole file's blob is checked against it; a safetensors file is not read again.
    const f: SourcedFile = { path: rel, size, ...hashes, source, ...(rel.endsWith(".safetensors") ? {} : { expect: { sha256: hashes.sha256 } }) };
    if (rel.endsWith(".safetensors")) f.safetensors = await readSafetensorsHeader(source);
    files.push(f);
  }
  if (files.length === 0) throw new CakeError("E_NOT_FOUND", `${dir}: no files`);
  return store.withLease(async () => {
    const { artifact, desc } = await convertFiles(sortFiles(files), {
      store,
      source: { type: "dir" },
      label: (_f, u) => `${u.path} bytes ${u.begin}-${u.end}`,
      ...(opts.progress ? { progress: opts.progress } : {}),
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
    });
    if (opts.tag) await store.tag(opts.tag, ociRefName(opts.tag), desc);
    return { ...artifact, digest: desc.digest };
  });
}
