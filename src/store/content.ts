/**
 * The content-store seam (oras-go's content.Storage): what every reader of blobs outside the store
 * uses — export, the proxy, the file checks, proof windows, push — so that another form of a stored
 * blob (a compressed one) changes the store, not them. A blob is named by the sha256 of its bytes;
 * its size is the store's record of it.
 */
import type { Readable } from "node:stream";

export interface ContentStore {
  /** Whether the blob is here (and, when `size` is given, of that size). */
  hasBlob(digest: string, size?: number): Promise<boolean>;
  /** The blob's size as the store records it; undefined when it is not here. */
  blobSize(digest: string): Promise<number | undefined>;
  /** A stream of the blob's bytes [start, end). */
  openBlob(digest: string, start?: number, end?: number): Readable;
  /** A small blob whole (at most `limit` bytes). */
  readBlob(digest: string, limit?: number): Promise<Buffer>;
  /** Bytes [start, end) of a blob, whole. */
  readRange(digest: string, start: number, end: number): Promise<Buffer>;
  /** Stores small bytes under their digest; returns it. */
  putBytes(bytes: Buffer): Promise<string>;
  /**
   * A plain file holding the blob's bytes as they are, for the paths that hand a file to the kernel
   * or a worker (copy_file_range, the hash worker); undefined for a blob stored in another form,
   * which those paths then read through `openBlob`.
   */
  rawFile(digest: string): string | undefined;
}
