/**
 * The compressed form of stored blobs (src/codec/, docs/format.md): `cake/compressed/<hex>` holds
 * blob `sha256:<hex>` — the digest of its raw bytes — when `blobs/sha256/<hex>` does not. It lives
 * outside `blobs/` so that the OCI layout holds only blobs that hash to their names (an outside
 * reader sees a compressed blob as missing, never as wrong bytes).
 *
 * Crash safety: a compressed form becomes visible (rename) only after it was fsynced and decoded
 * back to the digest; the raw file goes only after that. Decompressing is the same the other way.
 * A kill at any point leaves the raw file, the compressed one, or both (both: readers take the raw
 * one; the next compress or decompress removes the other).
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp, { type FileHandle } from "node:fs/promises";
import path from "node:path";
import { CompressedFile, encodeFile } from "../codec/index.js";
import { CakeError } from "../errors.js";
import { hexOf } from "../format/oci.js";
import { tempPath } from "./pid.js";
import { removeFile } from "./remove.js";

/** Whether a file operation failed because the file is not there. */
export const isMissing = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === "ENOENT";

export class CompressedBlobs {
  constructor(readonly dir: string) {}

  file(digest: string): string {
    return path.join(this.dir, hexOf(digest));
  }

  /** What errors call the blob: its digest and file, so a user can find it. */
  what(digest: string): string {
    return `blob ${digest} (${this.file(digest)})`;
  }

  /** The compressed blob opened for reading; undefined when it is not stored so. */
  async open(digest: string): Promise<CompressedFile | undefined> {
    try {
      return await CompressedFile.open(this.file(digest), this.what(digest));
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  /** Raw and stored bytes of the blob; undefined when it is not stored compressed. */
  async sizes(digest: string): Promise<{ raw: number; stored: number } | undefined> {
    // Most blobs are not compressed: a stat says so without an error thrown and caught.
    if (!fs.statSync(this.file(digest), { throwIfNoEntry: false })) return undefined;
    const z = await this.open(digest);
    if (!z) return undefined;
    await z.close();
    return { raw: z.rawSize, stored: z.storedSize };
  }

  /**
   * Makes the compressed form of `rawFile` (blob `digest`, `rawSize` bytes; a tensor of `dtype`, or
   * undefined for a pack or a whole file) visible: written aside, fsynced, decoded back and hashed,
   * renamed into place. Returns its stored size; undefined when it would not be smaller than raw
   * (nothing is left behind then). `background`: coding and the check's decoding stay off this
   * thread (a pull receives on it).
   */
  async write(rawFile: string, digest: string, rawSize: number, dtype: string | undefined, background = false): Promise<number | undefined> {
    const file = this.file(digest);
    const tmp = tempPath(file);
    const out = await fsp.open(tmp, "wx");
    try {
      const { storedSize } = await encodeFile(rawFile, rawSize, dtype, out, undefined, background);
      if (storedSize >= rawSize) return undefined;
      await out.sync();
      await out.close();
      await hashDecoded(tmp, digest, this.what(digest), background);
      await fsp.chmod(tmp, 0o444);
      await fsp.rename(tmp, file);
      await syncDir(this.dir);
      return storedSize;
    } finally {
      await out.close().catch(() => {});
      await removeFile(tmp);
    }
  }

  /** Writes the blob's raw bytes to `out` (a fresh temp file), checking they hash to `digest`; fsyncs it. */
  async decodeTo(digest: string, out: FileHandle): Promise<void> {
    const z = await CompressedFile.open(this.file(digest), this.what(digest));
    const sha = createHash("sha256");
    try {
      let at = 0;
      for await (const b of z.read()) {
        sha.update(b);
        for (let off = 0; off < b.length; ) off += (await out.write(b, off, b.length - off, at + off)).bytesWritten;
        at += b.length;
      }
    } finally {
      await z.close();
    }
    checkDigest(sha.digest("hex"), digest, this.what(digest));
    await out.sync();
  }

  remove(digest: string): Promise<void> {
    return removeFile(this.file(digest));
  }
}

/** Decodes the compressed file `file` whole and checks its bytes hash to `digest`. */
async function hashDecoded(file: string, digest: string, what: string, workersOnly: boolean): Promise<void> {
  const z = await CompressedFile.open(file, what, { workersOnly });
  const sha = createHash("sha256");
  try {
    for await (const b of z.read()) sha.update(b);
  } finally {
    await z.close();
  }
  checkDigest(sha.digest("hex"), digest, what);
}

function checkDigest(hex: string, digest: string, what: string): void {
  if (`sha256:${hex}` !== digest) throw new CakeError("E_DIGEST", `${what}: decodes to bytes that hash to sha256:${hex}; delete that file and pull the model again`);
}

/** Flushes a folder's entries (a rename into it) to disk. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
