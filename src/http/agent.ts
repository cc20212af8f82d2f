/**
 * The one undici dispatcher every client shares: keep-alive connection pools per origin, sized for
 * the transfer pool (default 16 requests at once, see src/transfer/defaults.ts) with headroom.
 *
 * undici itself is loaded on the first request: loading it costs about 0.2 s of CPU, which the
 * commands that never touch the network (export, ls, inspect, rm, gc) should not pay.
 */
import type { Dispatcher } from "undici";

type Undici = typeof import("undici");
let loaded: Promise<Undici> | undefined;
let shared: Promise<Dispatcher> | undefined;

export const undici = (): Promise<Undici> => (loaded ??= import("undici"));

export function sharedDispatcher(): Promise<Dispatcher> {
  shared ??= undici().then(
    ({ Agent }) =>
      new Agent({
        connections: 64,
        keepAliveTimeout: 30_000,
        headersTimeout: 60_000,
        // A stalled body (no byte for this long) is a dropped connection: the caller resumes with Range.
        bodyTimeout: 60_000,
        connect: { timeout: 30_000 },
      }),
  );
  return shared;
}

/** Closes the shared pools so a CLI process can exit promptly. */
export async function closeSharedDispatcher(): Promise<void> {
  const d = shared;
  shared = undefined;
  if (d) await (await d).close();
}
