/** The git blob id of a file: sha1("blob <size>\0" + content), what the Hub calls a file's oid. */
import { createHash, type Hash } from "node:crypto";

export function gitBlobHasher(size: number): Hash {
  return createHash("sha1").update(gitBlobPrefix(size));
}

/** What a git blob oid hashes before the content. */
export const gitBlobPrefix = (size: number) => `blob ${size}\0`;
