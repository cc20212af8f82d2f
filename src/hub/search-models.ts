/**
 * `GET /api/models?search=…`: models on the Hub whose id contains a string, as an async generator
 * that follows `Link: <…>; rel="next"` and stops after `limit` models (huggingface.js' listModels
 * shape). The fields asked for with `expand` are exactly the ones yielded, so the Hub sends nothing
 * else (https://huggingface.co/docs/hub/api#get-apimodels).
 */
import { CakeError } from "../errors.js";
import type { HubParams } from "./config.js";
import { followPages } from "../http/paginate.js";
import { hubJson } from "./request.js";

export interface HubModelHit {
  id: string;
  downloads: number;
  likes: number;
  /** ISO date of the last commit, when the Hub says. */
  lastModified?: string;
  /** The task, e.g. "text-generation" (the Hub's `pipeline_tag`). */
  pipelineTag?: string;
  private: boolean;
  /** false, or how access is granted ("auto", "manual"). */
  gated: false | string;
}

export type HubModelSort = "downloads" | "likes" | "lastModified" | "createdAt" | "trendingScore";

export interface SearchModelsOptions {
  /** Substring of the model id (`org/name`); empty lists every model. */
  search?: string;
  /** Only models of this user or organization. */
  author?: string;
  /** Stop after this many models (default 20). */
  limit?: number;
  /** Most first; default: the Hub's own order. */
  sort?: HubModelSort;
}

/** The fields cake shows; huggingface.js asks for the same ones (MODEL_EXPAND_KEYS). */
const EXPAND = ["downloads", "likes", "lastModified", "pipeline_tag", "private", "gated"] as const;
/** The Hub refuses pages larger than this. */
const MAX_PAGE = 1000;

interface ApiModel {
  id?: unknown;
  downloads?: unknown;
  likes?: unknown;
  lastModified?: unknown;
  pipeline_tag?: unknown;
  private?: unknown;
  gated?: unknown;
}

export async function* searchModels(params: HubParams, opts: SearchModelsOptions = {}): AsyncGenerator<HubModelHit> {
  const limit = opts.limit ?? 20;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new CakeError("E_USAGE", `search limit must be a positive integer, not ${limit}`);
  const q = new URLSearchParams();
  if (opts.search) q.set("search", opts.search);
  if (opts.author) q.set("author", opts.author);
  if (opts.sort) {
    q.set("sort", opts.sort);
    q.set("direction", "-1");
  }
  q.set("limit", String(Math.min(limit, MAX_PAGE)));
  for (const e of EXPAND) q.append("expand", e);
  const what = `Hub search ${JSON.stringify(opts.search ?? "")}`;
  const read = async (url: string) => {
    const { value, res } = await hubJson<ApiModel[]>(params, url, what);
    return { page: value, link: res.headers.link };
  };
  let left = limit;
  for await (const value of followPages(`${params.hubUrl}/api/models?${q}`, read, { what, code: "E_HTTP" })) {
    if (!Array.isArray(value)) throw new CakeError("E_HTTP", `${what}: the Hub's answer is not a list of models`);
    for (const m of value) {
      if (typeof m?.id !== "string") throw new CakeError("E_HTTP", `${what}: a model without an id: ${JSON.stringify(m).slice(0, 200)}`);
      yield {
        id: m.id,
        downloads: typeof m.downloads === "number" ? m.downloads : 0,
        likes: typeof m.likes === "number" ? m.likes : 0,
        ...(typeof m.lastModified === "string" ? { lastModified: m.lastModified } : {}),
        ...(typeof m.pipeline_tag === "string" ? { pipelineTag: m.pipeline_tag } : {}),
        private: m.private === true,
        gated: typeof m.gated === "string" ? m.gated : m.gated === true ? "true" : false,
      };
      if (--left === 0) return;
    }
  }
}
