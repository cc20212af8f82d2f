/**
 * A local folder (safetensors + other files) into the store as a cake artifact: the same plan as
 * a Hub pull (format/plan.ts), with the folder as the byte source, through the same engine.
 * `cake push ./my-model …` starts here.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { CakeError } from "../errors.js";
import { buildArtifact, type Artifact } from "../format/artifact.js";
import { gitBlobHasher } from "../format/git-oid.js";
import { CAKE_DIR, checkRelativePath } from "../format/paths.js";
import { MAX_LAYERS, PACK_FACTOR, planUnits, sortFiles, type ModelFile } from "../format/plan.js";
import { parseHeader, readHeaderLength } from "../format/safetensors.js";
import type { Store } from "../store/layout.js";
import { transferBlobs } from "../transfer/engine.js";
import type { ProgressSink } from "../transfer/progress.js";
import { storeArtifact } from "./catalog.js";
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

async function readLocalHeader(file: string, rel: string, size: number): Promise<ModelFile["safetensors"]> {
  const fh = await fsp.open(file, "r");
  try {
    const first8 = Buffer.alloc(8);
    await fh.read(first8, 0, 8, 0);
    const n = readHeaderLength(first8, size, rel);
    const json = Buffer.alloc(n);
    await fh.read(json, 0, n, 8);
    return { headerBytes: Buffer.concat([first8, json]), header: parseHeader(json, size, rel) };
  } finally {
    await fh.close();
  }
}

/**
 * Imports the folder `dir`. `tag`: a store reference to point at it, tagged under the same lease as
 * the import, so that no `cake gc` finds its blobs untagged in between.
 */
export async function importDir(dir: string, store: Store, opts: { progress?: ProgressSink; concurrency?: number; tag?: string } = {}): Promise<Artifact & { digest: string }> {
  const st = await fsp.stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new CakeError("E_NOT_FOUND", `${dir}: not a directory`);
  const files: ModelFile[] = [];
  for (const rel of await walk(dir)) {
    checkRelativePath(rel, `${dir} file`);
    const abs = path.join(dir, ...rel.split("/"));
    const size = (await fsp.stat(abs)).size;
    const f: ModelFile = { path: rel, size, ...(await hashFile(abs, size)) };
    if (rel.endsWith(".safetensors")) f.safetensors = await readLocalHeader(abs, rel, size);
    files.push(f);
  }
  if (files.length === 0) throw new CakeError("E_NOT_FOUND", `${dir}: no files`);
  const sorted = sortFiles(files);
  const plan = planUnits(sorted);
  const release = await store.lease();
  try {
    const jobs = plan.units.map((u) => {
      const abs = path.join(dir, ...u.path.split("/"));
      const f = sorted.find((x) => x.path === u.path)!;
      return {
        key: `local-${f.sha256}-${u.begin}-${u.end}`,
        size: u.end - u.begin,
        ...(u.kind === "file" ? { expected: `sha256:${f.sha256}` } : {}),
        label: `${u.path} bytes ${u.begin}-${u.end}`,
        existing: async () => undefined,
        open: async (s: number, e: number) => ({ body: fs.createReadStream(abs, { start: u.begin + s, end: u.begin + e - 1 }), start: s }),
      };
    });
    const { digests } = await transferBlobs(store, jobs, { ...(opts.progress ? { progress: opts.progress } : {}), ...(opts.concurrency ? { concurrency: opts.concurrency } : {}) });
    const artifact = buildArtifact({ files: sorted, plan, unitDigests: digests, source: { type: "dir" }, maxLayers: MAX_LAYERS, packFactor: PACK_FACTOR });
    const desc = await storeArtifact(store, artifact);
    if (opts.tag) await store.tag(opts.tag, ociRefName(opts.tag), desc);
    return { ...artifact, digest: desc.digest };
  } finally {
    await release();
  }
}
