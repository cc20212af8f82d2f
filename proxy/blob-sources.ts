/**
 * Where on the Hub each blob the proxy converted lies (`cake/proxy-sources`: "digest {source}" lines,
 * appended as conversions finish): a blob the store lost (gc) is fetched again by that range. One
 * source per repo and digest (the same tensor may be in several repos, some gated): a refetch reads
 * only a range of the repo that was asked for, with the credentials checked for it.
 */
import fsp from "node:fs/promises";
import path from "node:path";
import type { HubBlobSource } from "../src/index.js";

export class BlobSources {
  private loaded?: Promise<Map<string, HubBlobSource[]>>;
  private readonly file: string;

  constructor(storeRoot: string) {
    this.file = path.join(storeRoot, "cake", "proxy-sources");
  }

  /** Where `repo` holds blob `digest`, if a conversion of it recorded that. */
  async of(digest: string, repo: string): Promise<HubBlobSource | undefined> {
    return (await this.load()).get(digest)?.find((s) => s.repo === repo);
  }

  /** Records the sources one conversion told (in memory at once, on disk in one append). */
  async record(found: Array<[string, HubBlobSource]>): Promise<void> {
    const map = await this.load();
    for (const [digest, source] of found) addSource(map, digest, source);
    await fsp.appendFile(this.file, found.map(([d, s]) => `${d} ${JSON.stringify(s)}\n`).join(""));
  }

  private load(): Promise<Map<string, HubBlobSource[]>> {
    this.loaded ??= (async () => {
      const map = new Map<string, HubBlobSource[]>();
      const text = await fsp.readFile(this.file, "utf8").catch(() => "");
      for (const line of text.split("\n")) {
        const sp = line.indexOf(" ");
        if (sp < 0) continue;
        try {
          addSource(map, line.slice(0, sp), JSON.parse(line.slice(sp + 1)) as HubBlobSource);
        } catch {
          /* a torn last line */
        }
      }
      await fsp.mkdir(path.dirname(this.file), { recursive: true });
      return map;
    })();
    return this.loaded;
  }
}

/** Records where `repo` holds a blob, replacing that repo's older source (a later commit of it). */
function addSource(map: Map<string, HubBlobSource[]>, digest: string, source: HubBlobSource): void {
  const list = (map.get(digest) ?? []).filter((s) => s.repo !== source.repo);
  list.push(source);
  map.set(digest, list);
}
