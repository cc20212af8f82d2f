/**
 * Safe relative paths. Repo paths and layer titles come from strangers (a Hub repo, a registry
 * artifact); before one is joined to a directory it must be a plain relative path that cannot
 * escape it: no "..", no absolute path, no NUL or control characters, no backslash, no drive letter.
 */
import path from "node:path";
import { CakeError } from "../errors.js";

/** cake's own files inside an artifact directory (recipe, tensor blobs) live under this prefix. */
export const CAKE_DIR = ".cake";

export function checkRelativePath(p: unknown, what: string): string {
  const bad = (why: string): never => {
    throw new CakeError("E_PATH", `${what} ${JSON.stringify(p)} is not a safe relative path: ${why}`);
  };
  if (typeof p !== "string" || p.length === 0) return bad("empty");
  if (p.length > 4096) bad("too long");
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(p)) bad("control character");
  if (p.includes("\\")) bad("backslash");
  if (p.startsWith("/")) bad("absolute");
  if (/^[A-Za-z]:/.test(p)) bad("drive letter");
  for (const part of p.split("/")) {
    if (part === "") bad("empty component");
    if (part === "." || part === "..") bad(`'${part}' component`);
    if (Buffer.byteLength(part) > 255) bad("component longer than 255 bytes");
  }
  return p;
}

export function isSafeRelativePath(p: unknown): p is string {
  try {
    checkRelativePath(p, "");
    return true;
  } catch {
    return false;
  }
}

/** Joins a checked relative path to `dir`, and proves the result stays inside it. */
export function safeJoin(dir: string, rel: string, what: string): string {
  checkRelativePath(rel, what);
  const root = path.resolve(dir);
  const full = path.resolve(root, ...rel.split("/"));
  if (full !== root && !full.startsWith(root + path.sep)) {
    throw new CakeError("E_PATH", `${what} ${JSON.stringify(rel)} escapes ${dir}`);
  }
  return full;
}

/**
 * The paths of one directory tree, checked as they are added so that every one can become a file:
 * none twice, none that is also another's directory (`a` beside `a/b.json`: one of them would fail
 * half-way through an export with EISDIR or ENOTDIR), and no two that differ only in case (they are
 * one file on macOS and Windows). `add` returns the problem in words, naming both paths, or undefined.
 */
export class PathSet {
  /** Lower-cased file paths -> the path as given. */
  private readonly files = new Map<string, string>();
  /** Lower-cased directories -> the first path found under it. */
  private readonly dirs = new Map<string, string>();

  add(p: string): string | undefined {
    const key = p.toLowerCase();
    const same = this.files.get(key);
    if (same !== undefined) return same === p ? `${p} is listed twice` : `${same} and ${p} differ only in case`;
    const under = this.dirs.get(key);
    if (under !== undefined) return `${p} is a file and also the directory of ${under}`;
    const parts = key.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      const file = this.files.get(dir);
      if (file !== undefined) return `${file} is a file and also the directory of ${p}`;
    }
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (!this.dirs.has(dir)) this.dirs.set(dir, p);
    }
    this.files.set(key, p);
    return undefined;
  }
}
