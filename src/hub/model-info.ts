/** `GET /api/models/{repo}/revision/{rev}`: which commit a branch, tag or sha names. */
import { CakeError } from "../errors.js";
import type { HubParams } from "./config.js";
import { encodeRepo, hubJson } from "./request.js";
import { searchModels } from "./search-models.js";

export interface ModelInfo {
  id: string;
  sha: string;
  private?: boolean;
  gated?: boolean | string;
  /** The revision's files, by name only (the tree API has their sizes and hashes). */
  siblings?: { rfilename: string }[];
  /** When the revision was last changed (the commit's date), ISO 8601. */
  lastModified?: string;
  /** The model card's metadata; `base_model` names the model a fine-tune starts from. */
  cardData?: { base_model?: unknown };
}

export async function modelInfo(params: HubParams, repo: string, revision: string): Promise<ModelInfo> {
  const url = `${params.hubUrl}/api/models/${encodeRepo(repo)}/revision/${encodeURIComponent(revision)}`;
  const { value } = await hubJson<ModelInfo>(params, url, `hf://${repo}@${revision}`);
  if (typeof value?.sha !== "string" || !/^[a-f0-9]{40}$/.test(value.sha)) {
    throw new CakeError("E_HTTP", `hf://${repo}@${revision}: the Hub's model info has no commit sha`);
  }
  return value;
}

/**
 * The Hub's own spelling of a repo id given in any case (OCI names are lower case, Hub ids are not):
 * model info answers for the exact id; else the author's models are searched for a case-insensitive match.
 */
export async function canonicalRepoId(params: HubParams, anyCase: string): Promise<string | undefined> {
  try {
    return (await modelInfo(params, anyCase, "main")).id ?? anyCase;
  } catch (err) {
    if ((err as { code?: string }).code !== "E_NOT_FOUND") throw err;
  }
  const [org, model] = anyCase.split("/");
  if (!org || !model) return undefined;
  for await (const m of searchModels(params, { author: org, search: model, limit: 1000 })) {
    if (m.id.toLowerCase() === anyCase.toLowerCase()) return m.id;
  }
  return undefined;
}
