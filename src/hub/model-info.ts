/** `GET /api/models/{repo}/revision/{rev}`: which commit a branch, tag or sha names. */
import type { HubParams } from "./config.js";
import { encodeRepo, hubJson } from "./request.js";

export interface ModelInfo {
  id: string;
  sha: string;
  private?: boolean;
  gated?: boolean | string;
}

export async function modelInfo(params: HubParams, repo: string, revision: string): Promise<ModelInfo> {
  const url = `${params.hubUrl}/api/models/${encodeRepo(repo)}/revision/${encodeURIComponent(revision)}`;
  const { value } = await hubJson<ModelInfo>(params, url, `hf://${repo}@${revision}`);
  if (typeof value?.sha !== "string" || !/^[a-f0-9]{40}$/.test(value.sha)) {
    throw new Error(`hf://${repo}@${revision}: the Hub's model info has no commit sha`);
  }
  return value;
}
