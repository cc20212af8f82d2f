/**
 * The one undici dispatcher every client shares: keep-alive connection pools per origin, sized for
 * the transfer pool (default 16 requests at once, see src/transfer/defaults.ts) with headroom.
 */
import { Agent, type Dispatcher } from "undici";

let shared: Dispatcher | undefined;

export function sharedDispatcher(): Dispatcher {
  shared ??= new Agent({
    connections: 64,
    keepAliveTimeout: 30_000,
    headersTimeout: 60_000,
    // A stalled body (no byte for this long) is a dropped connection: the caller resumes with Range.
    bodyTimeout: 60_000,
    connect: { timeout: 30_000 },
  });
  return shared;
}

/** Closes the shared pools so a CLI process can exit promptly. */
export async function closeSharedDispatcher(): Promise<void> {
  const d = shared;
  shared = undefined;
  if (d) await d.close();
}
