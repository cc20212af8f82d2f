/**
 * Hashing a stored blob's bytes on the hash workers, whatever form it is stored in: its file when
 * stored as it is (the worker reads it from the page cache), else its decoded bytes, sent over.
 */
import type { ContentStore } from "./content.js";
import { hashParts, runningHash, type HashResult, type RunningHash } from "./hasher.js";

/** sha256 (and the git oid, given its prefix) of bytes [start, end) of blob `digest`. */
export async function hashBlob(store: ContentStore, digest: string, start: number, end: number, gitPrefix?: string): Promise<HashResult> {
  const file = store.rawFile(digest);
  const git = gitPrefix !== undefined ? { gitPrefix } : {};
  if (file) return hashParts({ parts: [{ file, start, end }], ...git });
  const hash = runningHash(gitPrefix);
  await feedBlob(store, digest, start, end, hash);
  return hash.digest();
}

/** Feeds bytes [start, end) of blob `digest` to `hash`, in order. */
export async function feedBlob(store: ContentStore, digest: string, start: number, end: number, hash: RunningHash): Promise<void> {
  const file = store.rawFile(digest);
  if (file) {
    hash.update([{ file, start, end }]);
    return;
  }
  for await (const b of store.openBlob(digest, start, end)) hash.update([{ bytes: b as Buffer }]);
}
