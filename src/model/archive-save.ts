/** `cake save`: models of the store into an OCI archive (see archive.ts). */
import fsp from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import type tar from "tar-stream";
import { CakeError } from "../errors.js";
import { walkGraph } from "../format/graph.js";
import { MANIFEST_LIMIT, MT, hexOf, type Descriptor, type ImageIndex } from "../format/oci.js";
import { canonicalRef } from "./source.js";
import type { ProgressSink } from "../transfer/progress.js";
import type { Store } from "../store/layout.js";
import { removeDeadTemps, tempPath } from "../store/pid.js";
import { ENTRY, tarStream } from "./archive-parts.js";

export interface SaveOptions {
  progress?: ProgressSink;
}

export interface SaveResult {
  /** The references saved, canonical (`hf://acme/m` -> `hf://acme/m@main`). */
  refs: string[];
  /** The index.json entries written, as the store holds them. */
  manifests: Descriptor[];
  blobs: number;
  bytes: number;
}

/**
 * Adds `src` as one entry, resolving when the entry has taken it whole. (tar-stream's entries are
 * streamx streams: piped into, not passed to node's pipeline, which would not see them end.)
 */
function addStream(pack: tar.Pack, header: tar.Headers, src: Readable): Promise<void> {
  return new Promise((resolve, reject) => {
    const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
    src.once("error", (err) => {
      sink.destroy(err);
      reject(err);
    });
    src.pipe(sink);
  });
}

function addBytes(pack: tar.Pack, name: string, bytes: Buffer): Promise<void> {
  return new Promise((resolve, reject) => pack.entry({ ...ENTRY, name, size: bytes.length, mode: 0o644, type: "file" }, bytes, (err) => (err ? reject(err) : resolve())));
}

function addDir(pack: tar.Pack, name: string): Promise<void> {
  return new Promise((resolve, reject) => pack.entry({ ...ENTRY, name, mode: 0o755, type: "directory" }, (err) => (err ? reject(err) : resolve())));
}

/**
 * Writes the models `refs` (store references, as `cake ls` shows them or as typed: `hf://acme/m`
 * means `hf://acme/m@main`) to the OCI archive `out`: written to a fresh temp name beside it
 * (`out.<pid>-<time>-<random>.tmp`, created exclusively: never through a link planted there), fsynced,
 * then renamed, so `out` is whole or absent. What killed saves to `out` left is removed first.
 */
export async function saveArchive(store: Store, refs: string[], out: string, opts: SaveOptions = {}): Promise<SaveResult> {
  if (refs.length === 0) throw new CakeError("E_USAGE", "save needs at least one reference");
  const tags = await store.tags();
  const manifests: Descriptor[] = [];
  // Every blob, checked present (at its size) before a byte is written.
  const blobs: Descriptor[] = [];
  const seen = new Set<string>();
  const wanted = [...new Set(refs.map(canonicalRef))];
  for (const ref of wanted) {
    const tag = tags.find((t) => t.ref === ref);
    if (!tag) throw new CakeError("E_NOT_FOUND", `${ref}: not in the store ${store.root}`);
    manifests.push(tag.descriptor);
    await walkGraph(
      tag.descriptor,
      (d) => store.readBlob(d.digest, MANIFEST_LIMIT),
      async (d, parent) => {
        const size = await store.blobSize(d.digest);
        if (size !== d.size) {
          throw new CakeError("E_NOT_FOUND", `${parent}: blob ${d.digest} is ${size === undefined ? "missing from" : `${size} bytes, not ${d.size}, in`} the store ${store.root}`);
        }
        blobs.push(d);
      },
      { seen, parent: ref },
    );
  }
  const bytes = blobs.reduce((n, d) => n + d.size, 0);
  opts.progress?.addTotal(bytes, blobs.length);

  const index: ImageIndex = { schemaVersion: 2, mediaType: MT.index, manifests };
  await removeDeadTemps(path.dirname(out), path.basename(out));
  const tmp = tempPath(out);
  const fh = await fsp.open(tmp, "wx");
  try {
    await writeTar(fh, store, index, blobs, opts.progress);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await fsp.rm(tmp, { force: true });
    throw err;
  } finally {
    opts.progress?.done();
  }
  await fh.close();
  await fsp.rename(tmp, out);
  return { refs: wanted, manifests, blobs: blobs.length, bytes };
}

/** The archive's bytes into `fh`: layout files first, then each blob streamed from the store. */
async function writeTar(fh: fsp.FileHandle, store: Store, index: ImageIndex, blobs: Descriptor[], progress: ProgressSink | undefined): Promise<void> {
  const pack = (await tarStream()).pack();
  // Pulled chunk by chunk: pack holds at most its high-water mark, entries wait for it to drain.
  const written = (async () => {
    for await (const chunk of pack) {
      const buf = chunk as Buffer;
      for (let off = 0; off < buf.length; ) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
    }
  })();
  const entries = async () => {
    await addBytes(pack, "oci-layout", Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" })));
    await addBytes(pack, "index.json", Buffer.from(JSON.stringify(index)));
    await addDir(pack, "blobs/");
    await addDir(pack, "blobs/sha256/");
    for (const d of blobs) {
      const src = store.openBlob(d.digest, 0, d.size);
      if (progress) src.on("data", (c: Buffer) => progress.bytes(c.length));
      await addStream(pack, { ...ENTRY, name: `blobs/sha256/${hexOf(d.digest)}`, size: d.size, mode: 0o444, type: "file" }, src);
      progress?.item();
    }
    pack.finalize();
  };
  try {
    await Promise.all([entries(), written]);
  } catch (err) {
    pack.destroy();
    throw err;
  }
}

