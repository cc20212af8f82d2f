/**
 * An original file of an artifact, read from the store without rebuilding it on disk: the recipe says
 * what it is made of (a safetensors file: its verbatim header, then its tensor blobs in order; any
 * other file: its one blob), and any byte range [start, end) of it is streamed from those pieces
 * through the content-store seam (store/content.ts: a blob's plain file when it has one, else
 * `openBlob`), so another stored form of a blob changes nothing here. `cake export` writes files from
 * the same segments; the proxy's ModelPack view and `push --format modelpack` serve and upload them.
 */
import fsp, { type FileHandle } from "node:fs/promises";
import { Readable } from "node:stream";
import { CakeError } from "../errors.js";
import type { Recipe, RecipeFile } from "../format/artifact.js";
import { isMissing } from "../store/compressed.js";
import { readPieces } from "../store/read-pieces.js";
import type { ContentStore } from "../store/content.js";

/** What the pieces are read through: `openBlob`, and a blob's plain file where the store has one. */
export type BlobReader = Pick<ContentStore, "openBlob"> & Partial<Pick<ContentStore, "rawFile">>;

/**
 * Bytes a file stream reads ahead of its reader: a few reads, so that the next ones (and the next
 * blob's open) are in flight while a slow socket, or a loaded machine, takes the current one.
 */
const READ_AHEAD = 4 << 20;

/** A piece of a file: bytes the recipe holds (a safetensors header), or a blob of `size` bytes. */
export type FileSegment = { bytes: Buffer } | { digest: string; size: number };

/** File `f`'s pieces in order; their sizes add up to `f.size` (parseRecipe checks that). */
export function fileSegments(recipe: Recipe, f: RecipeFile): FileSegment[] {
  const blobs = (f.digest !== undefined ? [f.digest] : f.parts!).map((digest) => ({ digest, size: recipe.blobs[digest]!.size }));
  return f.header !== undefined ? [{ bytes: Buffer.from(f.header, "base64") }, ...blobs] : blobs;
}

const segmentSize = (s: FileSegment) => ("bytes" in s ? s.bytes.length : s.size);

/** What a range takes of one segment: bytes [from, to) of it. */
type Cut = { s: FileSegment; from: number; to: number };

/** The parts of `segments` that bytes [start, end) of their concatenation cover, in order. */
function cutsOf(segments: readonly FileSegment[], start: number, end: number): Cut[] {
  const cuts: Cut[] = [];
  let at = 0;
  for (const s of segments) {
    const size = segmentSize(s);
    const from = Math.max(start, at) - at;
    const to = Math.min(end, at + size) - at;
    at += size;
    if (to > from) cuts.push({ s, from, to });
    if (at >= end) break;
  }
  return cuts;
}

/**
 * Blob `digest`'s plain file, opened; undefined when the store has none (stored compressed, or
 * compressed since `rawFile` answered: `openBlob` decodes it).
 */
async function openPlain(store: BlobReader, digest: string): Promise<FileHandle | undefined> {
  const file = store.rawFile?.(digest);
  if (file === undefined) return undefined;
  return fsp.open(file, "r").catch((err: unknown) => (isMissing(err) ? undefined : Promise.reject(err)));
}

export interface PieceOptions {
  /**
   * The buffer the next read of a plain blob file goes into (export's two buffers, taken in turn);
   * by default a new one per read, for readers that hold on to what they are given (a socket).
   */
  take?: () => Buffer;
  /** The file these bytes are of, named in errors after `where` (export: the source is `where`). */
  file?: string;
  /** What a blob's read error becomes (export: a missing blob, as one line that says what to do). */
  missing?: (digest: string, err: unknown) => unknown;
}

/**
 * Bytes [start, end) of the file made of `segments`: the part of each segment the range covers, a
 * blob's read from its plain file straight into the buffers handed on (a stream around each blob
 * costs the proxy about half as much CPU again per byte served), else through `store.openBlob`,
 * each checked to be as long as asked (a short blob is an E_SIZE naming `where`, never a file
 * silently cut). A blob with no plain file (a compressed one, decoded on worker threads) is opened,
 * and its first read started, while the one before it streams, so its first frames decode meanwhile.
 */
export async function* fileRangePieces(store: BlobReader, segments: readonly FileSegment[], start: number, end: number, where: string, opts: PieceOptions = {}): AsyncGenerator<Buffer> {
  const cuts = cutsOf(segments, start, end);
  const early = (i: number): Readable | undefined => {
    const c = cuts.slice(i).find((x) => "digest" in x.s);
    if (c === undefined || "bytes" in c.s || store.rawFile?.(c.s.digest) !== undefined) return undefined;
    const r = store.openBlob(c.s.digest, c.from, c.to);
    r.on("error", () => {}); // thrown where it is read; meanwhile it must not be an unhandled error
    r.read(0);
    return r;
  };
  let next = early(0);
  try {
    for (const [i, { s, from, to }] of cuts.entries()) {
      if ("bytes" in s) {
        yield s.bytes.subarray(from, to);
        continue;
      }
      const opened = next;
      next = early(i + 1);
      let got = 0;
      try {
        const fh = opened ? undefined : await openPlain(store, s.digest);
        const pieces = fh ? readPieces(fh, from, to, opts.take) : ((opened ?? store.openBlob(s.digest, from, to)) as AsyncIterable<Buffer>);
        for await (const b of pieces) {
          got += b.length;
          yield b;
        }
      } catch (err) {
        throw opts.missing?.(s.digest, err) ?? err;
      }
      if (got !== to - from) {
        const of = opts.file ? ` for ${opts.file}` : "";
        const at = from ? ` from byte ${from}` : "";
        throw new CakeError("E_SIZE", `${where}: blob ${s.digest}${of} has ${got} bytes${at}, the recipe says ${to - from}`);
      }
    }
  } finally {
    next?.destroy();
  }
}

/** A stream of bytes [start, end) of recipe file `f` (the whole file by default), assembled from the store. */
export function openFileRange(store: BlobReader, recipe: Recipe, f: RecipeFile, start = 0, end = f.size, where = f.path): Readable {
  if (start < 0 || end > f.size || start > end) throw new CakeError("E_USAGE", `${where}: range ${start}-${end} is outside the file's ${f.size} bytes`);
  return Readable.from(fileRangePieces(store, fileSegments(recipe, f), start, end, where), { objectMode: false, highWaterMark: READ_AHEAD });
}
