/**
 * The repository model behind the Hub emulator: files hashed once at commit time, real git object ids
 * (blob, tree, commit), the LFS decision, branches and tags.
 *
 * Content never lives in memory: a file is known by its path on disk plus the stat it had when it was
 * hashed, and is streamed from there when served. If the file changes on disk afterwards, the blob index
 * refuses to serve it rather than serve bytes that do not match the hashes it published.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";

/** Extensions the Hub stores with LFS whatever their size. */
export const LFS_EXTENSIONS = [".safetensors", ".bin", ".gguf", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".ckpt"];
/** Files at or above this size go to LFS whatever their name (the Hub's 10 MiB rule). */
export const LFS_MIN_SIZE = 10 * 1024 * 1024;

export function isLfs(path: string, size: number): boolean {
  const lower = path.toLowerCase();
  return size >= LFS_MIN_SIZE || LFS_EXTENSIONS.some((ext) => lower.endsWith(ext));
}

/** The git-lfs pointer file git stores in place of an LFS file. */
export function lfsPointer(sha256: string, size: number): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`;
}

/** git's object id: sha1("<type> <length>\0" + body). */
export function gitObjectId(type: "blob" | "tree" | "commit", body: Buffer): string {
  return createHash("sha1").update(`${type} ${body.length}\0`).update(body).digest("hex");
}

/** Where a blob's bytes are, and the stat they had when hashed (to notice later changes). */
export interface BlobSource {
  file: string;
  size: number;
  mtimeMs: number;
  ino: number;
}

export interface RepoFile {
  path: string;
  size: number;
  sha256: string;
  /** git blob id of the content itself (the ETag of a non-LFS file). */
  contentOid: string;
  lfs: boolean;
  /** The oid git stores: the content's for regular files, the pointer's for LFS files (what the Hub lists). */
  oid: string;
  /** Size of the LFS pointer file (LFS files only). */
  pointerSize?: number;
  source: BlobSource;
}

export interface Commit {
  sha: string;
  treeOid: string;
  parent?: string;
  message: string;
  /** ISO date, deterministic (derived from the commit's depth). */
  date: string;
  files: Map<string, RepoFile>;
  /** Directory path ("" = root) -> git tree oid. */
  dirs: Map<string, string>;
}

export interface RefInfo {
  name: string;
  target: string;
}

const HASH_CHUNK = 1024 * 1024;

/** Hashes a file once, streaming: sha256 of the content and its git blob id. */
export async function hashFile(file: string): Promise<{ sha256: string; contentOid: string; source: BlobSource }> {
  const st = await stat(file);
  const sha256 = createHash("sha256");
  const sha1 = createHash("sha1").update(`blob ${st.size}\0`);
  let seen = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: HASH_CHUNK })) {
    const b = chunk as Buffer;
    sha256.update(b);
    sha1.update(b);
    seen += b.length;
  }
  if (seen !== st.size) throw new Error(`${file} changed size while being hashed (${st.size} -> ${seen})`);
  return {
    sha256: sha256.digest("hex"),
    contentOid: sha1.digest("hex"),
    source: { file, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino },
  };
}

/** Every regular file under `dir`, as sorted posix paths relative to it. Skips `.git`. Follows symlinks to files. */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (abs: string, rel: string): Promise<void> => {
    const entries = await readdir(abs, { withFileTypes: true });
    for (const e of entries) {
      if (e.name === ".git") continue;
      const a = join(abs, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        const st = await stat(a);
        isDir = st.isDirectory();
        isFile = st.isFile();
      }
      if (isDir) await walk(a, r);
      else if (isFile) out.push(r);
    }
  };
  await walk(dir, "");
  return out.sort(byteCompare);
}

export function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** Builds git tree objects for a set of files; returns the root tree oid and every directory's tree oid. */
export function buildTrees(files: Map<string, RepoFile>): { root: string; dirs: Map<string, string> } {
  interface Node {
    files: Map<string, string>;
    dirs: Map<string, Node>;
  }
  const root: Node = { files: new Map(), dirs: new Map() };
  for (const f of files.values()) {
    const parts = f.path.split("/");
    let node = root;
    for (const part of parts.slice(0, -1)) {
      let next = node.dirs.get(part);
      if (!next) {
        next = { files: new Map(), dirs: new Map() };
        node.dirs.set(part, next);
      }
      node = next;
    }
    node.files.set(parts[parts.length - 1]!, f.oid);
  }
  const dirs = new Map<string, string>();
  const hashNode = (node: Node, path: string): string => {
    const entries: Array<{ sortKey: string; bytes: Buffer }> = [];
    for (const [name, oid] of node.files) {
      entries.push({ sortKey: name, bytes: Buffer.concat([Buffer.from(`100644 ${name}\0`), Buffer.from(oid, "hex")]) });
    }
    for (const [name, child] of node.dirs) {
      const oid = hashNode(child, path ? `${path}/${name}` : name);
      // git sorts a tree entry as if a directory's name ended in "/".
      entries.push({ sortKey: `${name}/`, bytes: Buffer.concat([Buffer.from(`40000 ${name}\0`), Buffer.from(oid, "hex")]) });
    }
    entries.sort((a, b) => byteCompare(a.sortKey, b.sortKey));
    const oid = gitObjectId("tree", Buffer.concat(entries.map((e) => e.bytes)));
    dirs.set(path, oid);
    return oid;
  };
  return { root: hashNode(root, ""), dirs };
}

const EPOCH = Date.UTC(2024, 0, 1);
const AUTHOR = "Cake Hub Emulator <hub-emulator@example.invalid>";

/** A git commit object over `treeOid` and `parent`; its date is derived from its depth so the sha is reproducible. */
export function makeCommitObject(treeOid: string, parent: Commit | undefined, message: string, depth: number): { sha: string; date: string } {
  const seconds = Math.floor(EPOCH / 1000) + depth * 60;
  const lines = [`tree ${treeOid}`];
  if (parent) lines.push(`parent ${parent.sha}`);
  lines.push(`author ${AUTHOR} ${seconds} +0000`, `committer ${AUTHOR} ${seconds} +0000`, "", message.endsWith("\n") ? message : `${message}\n`);
  const body = Buffer.from(lines.join("\n"), "utf8");
  return { sha: gitObjectId("commit", body), date: new Date(seconds * 1000).toISOString() };
}

const COMMIT_RE = /^[0-9a-f]{40}$/;

export class Repo {
  readonly id: string;
  gated: boolean;
  private: boolean;
  readonly createdAt: string;
  readonly branches = new Map<string, string>();
  readonly tags = new Map<string, string>();
  readonly commits = new Map<string, Commit>();
  private depth = new Map<string, number>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(id: string, opts: { gated?: boolean; private?: boolean; createdAt: string }) {
    this.id = id;
    this.gated = opts.gated ?? false;
    this.private = opts.private ?? false;
    this.createdAt = opts.createdAt;
  }

  get author(): string {
    return this.id.split("/")[0]!;
  }

  /** A branch, a tag, `refs/heads/x`, `refs/tags/x`, or a full 40-hex commit sha of this repo. */
  resolve(rev: string): Commit | undefined {
    let sha: string | undefined;
    if (this.branches.has(rev)) sha = this.branches.get(rev);
    else if (this.tags.has(rev)) sha = this.tags.get(rev);
    else if (rev.startsWith("refs/heads/")) sha = this.branches.get(rev.slice("refs/heads/".length));
    else if (rev.startsWith("refs/tags/")) sha = this.tags.get(rev.slice("refs/tags/".length));
    else if (COMMIT_RE.test(rev)) sha = rev;
    return sha === undefined ? undefined : this.commits.get(sha);
  }

  /** Newest commit of any branch (main first): what "last modified" means for the repo. */
  head(): Commit | undefined {
    const sha = this.branches.get("main") ?? [...this.branches.values()][0];
    return sha ? this.commits.get(sha) : undefined;
  }

  /** The commits reachable from `sha`, newest first. */
  history(sha: string): Commit[] {
    const out: Commit[] = [];
    let c = this.commits.get(sha);
    while (c) {
      out.push(c);
      c = c.parent ? this.commits.get(c.parent) : undefined;
    }
    return out;
  }

  /** The oldest commit, walking back from `sha`, since which `path` (file or directory) has had its current oid. */
  lastCommitFor(sha: string, path: string): Commit | undefined {
    const oidAt = (c: Commit): string | undefined => c.files.get(path)?.oid ?? c.dirs.get(path);
    const hist = this.history(sha);
    const want = hist[0] ? oidAt(hist[0]) : undefined;
    if (want === undefined) return undefined;
    let last = hist[0];
    for (const c of hist.slice(1)) {
      if (oidAt(c) !== want) break;
      last = c;
    }
    return last;
  }

  /** Commits the files of `files` (already hashed) on `branch`; serialized per repo. */
  commit(files: Map<string, RepoFile>, opts: { branch?: string; tags?: string[]; message?: string }): Promise<string> {
    const run = async (): Promise<string> => {
      const branch = opts.branch ?? "main";
      const parentSha = this.branches.get(branch);
      const parent = parentSha ? this.commits.get(parentSha) : undefined;
      const depth = parent ? (this.depth.get(parent.sha) ?? 0) + 1 : 0;
      const { root, dirs } = buildTrees(files);
      const message = opts.message ?? `Upload ${files.size} files`;
      const { sha, date } = makeCommitObject(root, parent, message, depth);
      if (!this.commits.has(sha)) {
        this.commits.set(sha, { sha, treeOid: root, parent: parent?.sha, message, date, files, dirs });
        this.depth.set(sha, depth);
      }
      this.branches.set(branch, sha);
      for (const t of opts.tags ?? []) this.tags.set(t, sha);
      return sha;
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Bytes of every distinct blob ever committed (what the Hub calls usedStorage). */
  usedStorage(): number {
    const seen = new Map<string, number>();
    for (const c of this.commits.values()) for (const f of c.files.values()) seen.set(f.sha256, f.size);
    let total = 0;
    for (const s of seen.values()) total += s;
    return total;
  }
}

/** sha256 -> where its bytes can be read. Several places may hold the same content; any unchanged one will do. */
export class BlobIndex {
  private bySha = new Map<string, BlobSource[]>();

  add(sha256: string, source: BlobSource): void {
    const list = this.bySha.get(sha256) ?? [];
    if (!list.some((s) => s.file === source.file && s.mtimeMs === source.mtimeMs && s.ino === source.ino && s.size === source.size)) {
      list.push(source);
    }
    this.bySha.set(sha256, list);
  }

  has(sha256: string): boolean {
    return this.bySha.has(sha256);
  }

  /** A source whose file still has the stat it had when hashed, or undefined if all of them changed. */
  async find(sha256: string): Promise<BlobSource | undefined> {
    for (const s of this.bySha.get(sha256) ?? []) {
      if (await unchanged(s)) return s;
    }
    return undefined;
  }
}

export async function unchanged(s: BlobSource): Promise<boolean> {
  try {
    const st = await stat(s.file);
    return st.size === s.size && st.mtimeMs === s.mtimeMs && st.ino === s.ino;
  } catch {
    return false;
  }
}

/** Hashes every file under `dir` (reusing `cache` for files unchanged since an earlier commit). */
export async function scanDir(dir: string, cache: Map<string, RepoFile>): Promise<Map<string, RepoFile>> {
  const paths = await listFiles(dir);
  const files = new Map<string, RepoFile>();
  for (const path of paths) {
    const abs = join(dir, path);
    const cached = cache.get(abs);
    if (cached && cached.path === path && (await unchanged(cached.source))) {
      files.set(path, cached);
      continue;
    }
    const h = await hashFile(abs);
    const lfs = isLfs(path, h.source.size);
    const pointer = lfsPointer(h.sha256, h.source.size);
    const entry: RepoFile = {
      path,
      size: h.source.size,
      sha256: h.sha256,
      contentOid: h.contentOid,
      lfs,
      oid: lfs ? gitObjectId("blob", Buffer.from(pointer)) : h.contentOid,
      source: h.source,
    };
    if (lfs) entry.pointerSize = Buffer.byteLength(pointer);
    cache.set(abs, entry);
    files.set(path, entry);
  }
  return files;
}

export type TreeEntry = { type: "file"; path: string; file: RepoFile } | { type: "directory"; path: string; oid: string };

interface DirIndex {
  subdirs: Map<string, string[]>;
  files: Map<string, RepoFile[]>;
}
const dirIndexes = new WeakMap<Commit, DirIndex>();

const parentOf = (p: string): string => {
  const i = p.lastIndexOf("/");
  return i < 0 ? "" : p.slice(0, i);
};

function dirIndex(c: Commit): DirIndex {
  let idx = dirIndexes.get(c);
  if (idx) return idx;
  idx = { subdirs: new Map(), files: new Map() };
  for (const d of c.dirs.keys()) {
    if (d === "") continue;
    const p = parentOf(d);
    idx.subdirs.set(p, [...(idx.subdirs.get(p) ?? []), d]);
  }
  for (const f of c.files.values()) {
    const p = parentOf(f.path);
    const list = idx.files.get(p) ?? [];
    list.push(f);
    idx.files.set(p, list);
  }
  for (const l of idx.subdirs.values()) l.sort(byteCompare);
  for (const l of idx.files.values()) l.sort((a, b) => byteCompare(a.path, b.path));
  dirIndexes.set(c, idx);
  return idx;
}

/**
 * The entries of directory `dir` ("" = root) at commit `c`, directories first then files, each sorted;
 * when `recursive`, each directory is followed by its own contents. Undefined when `dir` is not a directory.
 */
export function listTree(c: Commit, dir: string, recursive: boolean): TreeEntry[] | undefined {
  if (!c.dirs.has(dir)) return undefined;
  const idx = dirIndex(c);
  const out: TreeEntry[] = [];
  const walk = (d: string): void => {
    for (const sub of idx.subdirs.get(d) ?? []) {
      out.push({ type: "directory", path: sub, oid: c.dirs.get(sub)! });
      if (recursive) walk(sub);
    }
    for (const f of idx.files.get(d) ?? []) out.push({ type: "file", path: f.path, file: f });
  };
  walk(dir);
  return out;
}

/** The entry at `path` (file or directory), if any. */
export function entryAt(c: Commit, path: string): TreeEntry | undefined {
  const f = c.files.get(path);
  if (f) return { type: "file", path, file: f };
  const oid = path === "" ? undefined : c.dirs.get(path);
  return oid ? { type: "directory", path, oid } : undefined;
}
