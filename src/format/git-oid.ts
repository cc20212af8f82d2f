/** The git blob id of a file: sha1("blob <size>\0" + content), what the Hub calls a file's oid. */
import { createHash, type Hash } from "node:crypto";

export function gitBlobHasher(size: number): Hash {
  return createHash("sha1").update(`blob ${size}\0`);
}
