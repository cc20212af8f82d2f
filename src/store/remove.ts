import fs from "node:fs";

/**
 * Removes a file; already gone is fine. One unlink: `fs.rm(file, { force: true })` stats the path
 * first (it also removes directories): 2000 files took 195-396 ms of CPU that way, 122-142 ms
 * unlinked, and every blob a pull stores removes three files (its lock's temp, its journal, its
 * lock). Synchronous: an unlink takes microseconds, handing it to libuv's threads and back costs
 * the main thread more (see store/ingest.ts).
 */
export async function removeFile(file: string): Promise<void> {
  try {
    fs.unlinkSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}
