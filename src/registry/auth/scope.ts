/** Repository scopes as the token spec spells them (https://distribution.github.io/distribution/spec/auth/scope/). */

/** `repository:<name>:<actions>` as the token spec spells a scope. */
export const repositoryScope = (repository: string, actions: "pull" | "pull,push" | "delete" | string) =>
  `repository:${repository}:${actions}`;

/** Merges scopes, joining actions on the same resource (`repository:a:pull` + `repository:a:push`). */
export function mergeScopes(...lists: string[][]): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const scope of lists.flat()) {
    const last = scope.lastIndexOf(":");
    if (last <= 0) continue;
    const resource = scope.slice(0, last);
    const actions = byResource.get(resource) ?? new Set<string>();
    for (const a of scope.slice(last + 1).split(",")) if (a) actions.add(a);
    byResource.set(resource, actions);
  }
  return [...byResource.entries()].map(([r, a]) => `${r}:${[...a].sort().join(",")}`).sort();
}
