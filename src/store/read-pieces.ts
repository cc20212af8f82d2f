/**
 * Bytes [start, end) of an open file (to its end when `end` is undefined) as the buffers they are
 * read into, 1 MiB at a time (or into the buffers `take` gives), each handed on as it is (no copy);
 * the file is closed at the end or when the reader stops. What the store's `openBlob` and the
 * file-range reader (model/file-range.ts) read a plain blob file with.
 */
import type { FileHandle } from "node:fs/promises";

/** One read (1 MiB): few enough reads per blob that their overhead is small, and a small buffer each. */
const READ_SIZE = 1 << 20;

export async function* readPieces(fh: FileHandle, start: number, end: number | undefined, take?: () => Buffer): AsyncGenerator<Buffer> {
  try {
    for (let at = start; end === undefined || at < end; ) {
      const buf = take?.() ?? Buffer.allocUnsafe(Math.min(READ_SIZE, (end ?? Infinity) - at));
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, (end ?? Infinity) - at), at);
      if (bytesRead === 0) return;
      yield buf.subarray(0, bytesRead);
      at += bytesRead;
    }
  } finally {
    await fh.close();
  }
}
