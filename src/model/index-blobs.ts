/**
 * Units an index names, taken from the index's own registry when it holds their blobs too (a proxy
 * backend, where a replica that died mid-push left its index entry and part of the blobs): the
 * same engine and checks as any blob (ranges -> fetch pool -> verify against the digest -> store),
 * the source a registry blob instead of the Hub. What the registry lacks, or fails to give, is
 * simply not taken: the pull fetches it from the Hub as without an index, and each file's hash
 * still proves what was taken.
 */
import { oneLine } from "../errors.js";
import type { Store } from "../store/layout.js";
import { transferBlobs } from "../transfer/engine.js";
import { Pool } from "../transfer/pool.js";
import type { ModelIndexUnit } from "./index-artifact.js";
import { registryBlobJob } from "./range-source.js";
import { clientFor, type RegistryAccess } from "./registry-pull.js";
import { parseReference } from "../registry/index.js";

export interface IndexBlobsTaken {
  blobs: number;
  bytes: number;
}

/**
 * Fetches into the store every blob of `units` that the store lacks and the registry of the index
 * entry `entry` (`host/repo:tag`) holds, asked by HEAD, `concurrency` at a time. A failure is one
 * line to `warn`, never an error.
 */
export async function takeIndexedBlobs(
  store: Store,
  entry: string,
  units: readonly ModelIndexUnit[],
  access: RegistryAccess,
  opts: { concurrency?: number; signal?: AbortSignal; warn?: (line: string) => void } = {},
): Promise<IndexBlobsTaken> {
  const ref = parseReference(entry);
  const client = clientFor(ref.registry, access, { retry: { retries: 1 } });
  const wanted = new Map<string, number>();
  for (const u of units) wanted.set(u.digest, u.end - u.begin);
  const pool = new Pool(opts.concurrency ?? 16);
  try {
    const held = (
      await Promise.all(
        [...wanted].map(([digest, size]) =>
          pool.run(async () => {
            if (await store.hasBlob(digest, size)) return undefined;
            return (await client.hasBlob(ref.repository, digest)) === size ? { digest, size } : undefined;
          }),
        ),
      )
    ).filter((b) => b !== undefined);
    if (held.length === 0) return { blobs: 0, bytes: 0 };
    const jobs = held.map((b) => registryBlobJob(store, client, ref.repository, b, `${ref.registry}/${ref.repository} blob ${b.digest}`));
    const { stats } = await transferBlobs(store, jobs, { ...(opts.concurrency ? { concurrency: opts.concurrency } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
    return { blobs: held.length, bytes: stats.fetchedBytes };
  } catch (err) {
    opts.signal?.throwIfAborted();
    opts.warn?.(`${entry}: its blobs could not be taken (${oneLine(err)}); fetching them from the Hub`);
    return { blobs: 0, bytes: 0 };
  }
}
