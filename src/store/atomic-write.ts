/**
 * Writing a whole file crash-safe: to a fresh temp name, flushed to disk, then renamed into place, so
 * a reader (or a process after a crash) sees the old content or the new, never half of it.
 */
import fsp from "node:fs/promises";
import { tempPath } from "./pid.js";

/** Writes a new file (a fresh temp name: O_EXCL, never an existing file or link) and flushes it to disk (before it is renamed into place). */
export async function writeSynced(file: string, content: string | Buffer): Promise<void> {
  const fh = await fsp.open(file, "wx");
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Replaces `file` with `content`: written aside (writeSynced), then renamed over it. */
export async function atomicWrite(file: string, content: string | Buffer): Promise<void> {
  const tmp = tempPath(file);
  await writeSynced(tmp, content);
  await fsp.rename(tmp, file);
}
