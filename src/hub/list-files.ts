/**
 * `GET /api/models/{repo}/tree/{commit}?recursive=true`: every file of a revision, following the
 * `Link: <…>; rel="next"` pagination, as an async generator (huggingface.js' listFiles shape).
 */
import { CakeError } from "../errors.js";
import { PathSet } from "../format/paths.js";
import { followPages } from "../http/paginate.js";
import type { HubParams } from "./config.js";
import { encodeRepo, hubJson } from "./request.js";

export interface HubFile {
  path: string;
  size: number;
  /** git blob oid (sha1 hex). */
  oid: string;
  /** LFS files: the sha256 of the content (hex) and its size. */
  lfs?: { oid: string; size: number };
}

interface TreeEntry {
  type: "file" | "directory";
  path: string;
  size: number;
  oid: string;
  lfs?: { oid: string; size: number; pointerSize?: number };
}

/**
 * Every file of `repo@commit`. A listing that loops is refused (src/http/paginate.ts), and so is one
 * whose paths cannot all be files of one tree (a path twice, `a` beside `a/b.json`, names that differ
 * only in case): one line naming them, before a byte is fetched.
 */
export async function* listFiles(params: HubParams, repo: string, commit: string): AsyncGenerator<HubFile> {
  const first = `${params.hubUrl}/api/models/${encodeRepo(repo)}/tree/${encodeURIComponent(commit)}?recursive=true&expand=false`;
  const what = `hf://${repo}@${commit}`;
  const paths = new PathSet();
  const read = async (url: string) => {
    const { value, res } = await hubJson<TreeEntry[]>(params, url, what);
    return { page: value, link: res.headers.link };
  };
  for await (const value of followPages(first, read, { what: `${what} tree listing`, code: "E_HTTP" })) {
    if (!Array.isArray(value)) throw new CakeError("E_HTTP", `${what}: tree listing is not an array`);
    for (const e of value) {
      if (e.type !== "file") continue;
      if (typeof e.path !== "string" || !Number.isSafeInteger(e.size) || typeof e.oid !== "string") {
        throw new CakeError("E_HTTP", `${what}: malformed tree entry ${JSON.stringify(e).slice(0, 200)}`);
      }
      const clash = paths.add(e.path);
      if (clash) throw new CakeError("E_PATH", `${what}: the tree listing cannot be files of one folder: ${clash}`);
      const lfs = e.lfs && /^[a-f0-9]{64}$/.test(e.lfs.oid) ? { oid: e.lfs.oid, size: e.lfs.size } : undefined;
      yield { path: e.path, size: e.size, oid: e.oid, ...(lfs ? { lfs } : {}) };
    }
  }
}
