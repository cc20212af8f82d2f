/**
 * `GET /api/models/{repo}/tree/{commit}?recursive=true`: every file of a revision, following the
 * `Link: <…>; rel="next"` pagination, as an async generator (huggingface.js' listFiles shape).
 */
import { CakeError } from "../errors.js";
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

export function nextLink(link: string | string[] | undefined): string | undefined {
  const value = Array.isArray(link) ? link.join(",") : link;
  if (!value) return undefined;
  for (const part of value.split(",")) {
    const m = /<([^>]+)>\s*;\s*rel="?next"?/.exec(part);
    if (m) return m[1];
  }
  return undefined;
}

export async function* listFiles(params: HubParams, repo: string, commit: string): AsyncGenerator<HubFile> {
  let url: string | undefined = `${params.hubUrl}/api/models/${encodeRepo(repo)}/tree/${encodeURIComponent(commit)}?recursive=true&expand=false`;
  const what = `hf://${repo}@${commit}`;
  while (url) {
    const { value, res }: { value: TreeEntry[]; res: { headers: Record<string, string | string[] | undefined> } } = await hubJson<TreeEntry[]>(params, url, what);
    if (!Array.isArray(value)) throw new CakeError("E_HTTP", `${what}: tree listing is not an array`);
    for (const e of value) {
      if (e.type !== "file") continue;
      if (typeof e.path !== "string" || !Number.isSafeInteger(e.size) || typeof e.oid !== "string") {
        throw new CakeError("E_HTTP", `${what}: malformed tree entry ${JSON.stringify(e).slice(0, 200)}`);
      }
      const lfs = e.lfs && /^[a-f0-9]{64}$/.test(e.lfs.oid) ? { oid: e.lfs.oid, size: e.lfs.size } : undefined;
      yield { path: e.path, size: e.size, oid: e.oid, ...(lfs ? { lfs } : {}) };
    }
    const next = nextLink(res.headers.link);
    url = next ? new URL(next, params.hubUrl).toString() : undefined;
  }
}
