/**
 * `cake proxy --port P --hub URL` as a child of the bench, its store a fresh temp dir: started, asked
 * `/v2/` until it answers, stopped (SIGTERM) and its store removed by `stop()` or at the scratch's
 * cleanup. Used by the proxy and faults scenarios.
 */
import fs from "node:fs/promises";
import type { Hub } from "../../test/hub/emulator.js";
import { freePort } from "../../test/registry/harness.js";
import { cakeEnv } from "./context.js";
import { CAKE, sleep, start, type Scratch } from "./proc.js";

export interface RunningCakeProxy {
  /** host:port, for references `<host>/hf/<org>/<name>:<rev>`. */
  host: string;
  /** Its CAKE_HOME (its store). */
  home: string;
  /** The end of the proxy's stderr. */
  tail(): string;
  stop(): Promise<void>;
}

async function waitForV2(url: string, alive: () => boolean, tail: () => string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`cake proxy exited: ${tail()}`);
    const ok = await fetch(`${url}/v2/`).then((r) => r.status === 200 || r.status === 401, () => false);
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`cake proxy did not answer ${url}/v2/ within 20 s: ${tail()}`);
}

export async function startCakeProxy(scratch: Scratch, hub: Hub): Promise<RunningCakeProxy> {
  const home = await scratch.dir("proxy-home");
  const port = await freePort();
  const child = start(process.execPath, [CAKE, "proxy", "--port", String(port), "--hub", hub.url], { env: cakeEnv(hub, home) });
  let alive = true;
  child.once("exit", () => (alive = false));
  const stop = async () => {
    if (alive) {
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await gone;
    }
    await fs.rm(home, { recursive: true, force: true });
  };
  scratch.defer(stop);
  const host = `127.0.0.1:${port}`;
  await waitForV2(`http://${host}`, () => alive, child.tail);
  return { host, home, tail: child.tail, stop };
}
