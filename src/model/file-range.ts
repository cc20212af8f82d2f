/**
 * An original file of an artifact, read from the store without rebuilding it on disk: the recipe says
 * what it is made of (a safetensors file: its verbatim header, then its tensor blobs in order; any
 * other file: its one blob), and any byte range [start, end) of it is streamed from those pieces
 * through the content-store seam (store/content.ts `openBlob`), so another stored form of a blob
 * changes nothing here. `cake export` writes files from the same segments; the proxy's ModelPack view
 * and `push --format modelpack` serve and upload them.
 */
import { Readable } from "node:stream";
import { CakeError } from "../errors.js";
import type { Recipe, RecipeFile } from "../format/artifact.js";
import type { ContentStore } from "../store/content.js";

/** A piece of a file: bytes the recipe holds (a safetensors header), or a blob of `size` bytes. */
export type FileSegment = { bytes: Buffer } | { digest: string; size: number };

/** File `f`'s pieces in order; their sizes add up to `f.size` (parseRecipe checks that). */
export function fileSegments(recipe: Recipe, f: RecipeFile): FileSegment[] {
  const blobs = (f.digest !== undefined ? [f.digest] : f.parts!).map((digest) => ({ digest, size: recipe.blobs[digest]!.size }));
  return f.header !== undefined ? [{ bytes: Buffer.from(f.header, "base64") }, ...blobs] : blobs;
}

const segmentSize = (s: FileSegment) => ("bytes" in s ? s.bytes.length : s.size);

/**
 * Bytes [start, end) of the file made of `segments`: the part of each segment the range covers, a
 * blob's through `store.openBlob`, each checked to be as long as asked (a short blob is an E_SIZE
 * naming `where`, never a file silently cut).
 */
export async function* fileRangePieces(store: Pick<ContentStore, "openBlob">, segments: readonly FileSegment[], start: number, end: number, where: string): AsyncGenerator<Buffer> {
  let at = 0;
  for (const s of segments) {
    const size = segmentSize(s);
    const from = Math.max(start, at) - at;
    const to = Math.min(end, at + size) - at;
    at += size;
    if (to <= from) {
      if (at >= end) return;
      continue;
    }
    if ("bytes" in s) {
      yield s.bytes.subarray(from, to);
      continue;
    }
    let got = 0;
    for await (const b of store.openBlob(s.digest, from, to) as AsyncIterable<Buffer>) {
      got += b.length;
      yield b;
    }
    if (got !== to - from) throw new CakeError("E_SIZE", `${where}: blob ${s.digest} gave ${got} bytes from ${from}, expected ${to - from}`);
  }
}

/** A stream of bytes [start, end) of recipe file `f` (the whole file by default), assembled from the store. */
export function openFileRange(store: Pick<ContentStore, "openBlob">, recipe: Recipe, f: RecipeFile, start = 0, end = f.size, where = f.path): Readable {
  if (start < 0 || end > f.size || start > end) throw new CakeError("E_USAGE", `${where}: range ${start}-${end} is outside the file's ${f.size} bytes`);
  return Readable.from(fileRangePieces(store, fileSegments(recipe, f), start, end, where), { objectMode: false });
}
