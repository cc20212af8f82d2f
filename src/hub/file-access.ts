/**
 * Whether the Hub lets these credentials read a file: `HEAD /{repo}/resolve/{commit}/{path}`.
 * A 404 on an existence check is an answer, not an error (huggingface.js' fileExists shape); so are
 * 401/403 (gated, private). Used by the proxy before it serves cached bytes of a repo to a client.
 */
import { header, httpRequest } from "../http/request.js";
import type { HubParams } from "./config.js";
import { hubError } from "./errors.js";
import { encodePath, encodeRepo, hubHeaders } from "./request.js";

export type Access = "ok" | "denied" | "missing";

export async function fileAccess(params: HubParams, repo: string, commit: string, path: string): Promise<Access> {
  const url = `${params.hubUrl}/${encodeRepo(repo)}/resolve/${encodeURIComponent(commit)}/${encodePath(path)}`;
  const res = await httpRequest(url, { method: "HEAD", headers: hubHeaders(params), followRedirects: false, ...(params.signal ? { signal: params.signal } : {}) });
  await res.body.dump();
  if (res.status < 400) return "ok";
  if (res.status === 401 || res.status === 403) return "denied";
  if (res.status === 404) return header(res.headers, "x-error-code") === "EntryNotFound" ? "missing" : "denied";
  throw await hubError(res, `hf://${repo}@${commit}/${path}`, params);
}
