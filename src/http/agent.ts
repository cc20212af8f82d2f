/**
 * The one undici dispatcher every client shares: keep-alive connection pools per origin, sized for
 * the transfer pool (default 16 requests at once, see src/transfer/defaults.ts) with headroom.
 *
 * Only the two undici modules cake uses are loaded (the Agent and the request API), on the first
 * request. undici's index loads all of it (fetch, websocket, cache, mocks): about 0.15 s before a
 * pull's first request, against 0.05 s for these two, and the commands that never touch the network
 * (export, ls, inspect, rm, gc) load none. undici is pinned to one version (package.json) and has no
 * exports map, so these paths are part of what that version ships; the test suite exercises both.
 *
 * When the environment names a proxy (HTTPS_PROXY and the others, read as curl reads them: see
 * ./proxy-env.ts), the shared dispatcher routes each origin direct or through its proxy
 * (./proxy-router.ts, with undici's ProxyAgent): that code loads only then.
 */
import type { Agent, Dispatcher } from "undici";
import { readProxyEnv } from "./proxy-env.js";
import { closeIdleSockets, isSocketRange, rangeOverSocket } from "./range-socket.js";
import { closeReceiveWorkers, rangeInWorker, receiveWorkerFor } from "./receive-workers.js";
import type { ProxyRouter } from "./proxy-router.js";
import { HTTP_TIMEOUTS } from "./timeouts.js";

interface UndiciCore {
  Agent: typeof import("undici/lib/dispatcher/agent.js").default;
  request: typeof import("undici/lib/api/api-request.js").default;
}
let loaded: Promise<UndiciCore> | undefined;
let shared: Promise<Dispatcher> | undefined;
let router: ProxyRouter | undefined;
/** The shared dispatcher when it connects direct to every origin (no proxy in the environment). */
let direct: Dispatcher | undefined;

const undiciCore = (): Promise<UndiciCore> =>
  (loaded ??= Promise.all([import("undici/lib/dispatcher/agent.js"), import("undici/lib/api/api-request.js")]).then(([agent, api]) => ({
    Agent: agent.default,
    request: api.default,
  })));

const AGENT_OPTIONS: Agent.Options = {
  connections: 64,
  keepAliveTimeout: 30_000,
  // A stalled answer (no byte for this long) is a dropped connection: the caller resumes with Range.
  // Every request sets its own (src/http/timeouts.ts); these are the same, for any other caller.
  headersTimeout: HTTP_TIMEOUTS.idleMs,
  bodyTimeout: HTTP_TIMEOUTS.idleMs,
  connect: { timeout: 30_000 },
};

export function sharedDispatcher(): Promise<Dispatcher> {
  shared ??= undiciCore().then(async ({ Agent }) => {
    const agent = new Agent(AGENT_OPTIONS);
    const proxies = readProxyEnv();
    if (!proxies) return (direct = agent);
    const { ProxyRouter } = await import("./proxy-router.js");
    return (router = new ProxyRouter(agent, proxies, AGENT_OPTIONS));
  });
  return shared;
}

/** One request of `url` through `dispatcher` (undici's `request(url, opts)`, without its index). */
export async function dispatchRequest(dispatcher: Dispatcher, url: URL, opts: Omit<Dispatcher.RequestOptions, "origin" | "path">): Promise<Dispatcher.ResponseData> {
  // A Range of a plain-HTTP origin reached direct: on a raw socket (./range-socket.ts), receiving at
  // a seventh of undici's CPU; an answer it does not read (no Content-Length) comes through undici.
  // A transfer's request on a big machine: on a socket of a receive worker (./receive-workers.ts).
  if (dispatcher === direct && isSocketRange(url, opts)) {
    const signal = opts.signal as AbortSignal | undefined;
    const req = { headers: opts.headers as Record<string, string>, signal, headersTimeout: opts.headersTimeout ?? undefined, bodyTimeout: opts.bodyTimeout ?? undefined };
    const worker = receiveWorkerFor(signal);
    const answer = await (worker ? rangeInWorker(worker, url, req) : rangeOverSocket(url, req));
    if (answer) return answer as unknown as Dispatcher.ResponseData;
  }
  const { request } = await undiciCore();
  try {
    return await request.call(dispatcher, { ...opts, origin: url.origin, path: `${url.pathname}${url.search}` });
  } catch (err) {
    // A proxy that cannot be reached or refuses is named, without its credentials.
    throw dispatcher === router ? router.explain(err, url) : err;
  }
}

/** Closes the shared pools so a CLI process can exit promptly. */
export async function closeSharedDispatcher(): Promise<void> {
  const d = shared;
  shared = undefined;
  router = undefined;
  direct = undefined;
  closeIdleSockets();
  closeReceiveWorkers();
  // A dispatcher that was never made (a proxy variable cake cannot use) has nothing to close.
  await (await d?.catch(() => undefined))?.close();
}
