/** `GET /api/models/{repo}/refs`: a repo's branches and tags, each with the commit it names. */
import type { HubParams } from "./config.js";
import { encodeRepo, hubJson } from "./request.js";

export interface HubRef {
  name: string;
  targetCommit: string;
}

export async function listRefs(params: HubParams, repo: string): Promise<{ branches: HubRef[]; tags: HubRef[] }> {
  const { value } = await hubJson<{ branches?: HubRef[]; tags?: HubRef[] }>(params, `${params.hubUrl}/api/models/${encodeRepo(repo)}/refs`, `hf://${repo}`);
  return { branches: value.branches ?? [], tags: value.tags ?? [] };
}
