/**
 * Scenario 5, `cake proxy` cold and warm: an OCI client pulls `<proxy>/hf/<org>/<name>:<rev>` through
 * `cake proxy --port P --hub URL` (its store in CAKE_HOME). Cold: an empty proxy store, so the proxy
 * fetches from the Hub emulation while it serves. Warm: the same pull again, served from the proxy's
 * store. The reference is CNCF distribution serving the same artifact (pushed by cake) to the same
 * clients. Skipped while `cake proxy` does not exist.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { startCakeProxy } from "../lib/cake-proxy.js";
import { cakeEnv, type Models, type Options } from "../lib/context.js";
import { cakeProxyAvailable, checkRegistry, ensureOras } from "../lib/peers.js";
import { CAKE, cake, medianOf, Scratch, timed } from "../lib/proc.js";
import { mb, mbs, pct, secs, type Section } from "../lib/report.js";
import { hubWith, registryIn } from "../lib/servers.js";

const REPO = "bench/model";

export async function proxy(models: Models, opts: Options): Promise<Section> {
  const skipped = (why: string): Section => ({
    name: "proxy",
    title: "5. Proxy, cold and warm",
    setup: [why],
    header: [],
    rows: [],
    targets: [],
    notes: [],
  });
  if (!(await cakeProxyAvailable(CAKE))) {
    process.stdout.write("skipped: cake proxy not available\n");
    return skipped("skipped: cake proxy not available (`./bin/cake proxy --help` fails); re-run `npm run bench -- proxy` once it exists");
  }
  const oras = await ensureOras();
  checkRegistry();
  const model = await models.base();
  const scratch = new Scratch();
  try {
    const hub = await hubWith(scratch, REPO, model.dir);
    const reg = await registryIn(scratch);
    const pushStore = await scratch.dir("proxy-push");
    await cake(["push", "-q", `hf://${REPO}`, `${reg.host}/hf/${REPO}:main`], cakeEnv(hub, pushStore));

    const startProxy = () => startCakeProxy(scratch, hub);

    type Client = { name: string; pull: (ref: string, dir: string) => Promise<{ secs: number }> };
    const clients: Client[] = [
      { name: "cake pull", pull: (ref, dir) => cake(["pull", "-q", ref], cakeEnv(undefined, dir)) },
      { name: "oras pull --concurrency 16", pull: (ref, dir) => timed(oras, ["pull", "--plain-http", "--no-tty", "--concurrency", "16", "-o", dir, ref]) },
    ];
    const rows: (string | number)[][] = [];
    const targets: Section["targets"] = [];
    for (const cl of clients) {
      const once = async (ref: string) => {
        const d = await scratch.dir("proxy-client");
        const t = await cl.pull(ref, path.join(d, "out"));
        await fs.rm(d, { recursive: true, force: true });
        return { secs: t.secs };
      };
      const cold = await medianOf(opts.runs, async () => {
        const p = await startProxy();
        try {
          return await once(`${p.host}/hf/${REPO}:main`);
        } finally {
          await p.stop();
        }
      });
      const p = await startProxy();
      await once(`${p.host}/hf/${REPO}:main`);
      // Distribution and the warm proxy alternate, so a change in the machine's load hits both alike.
      const pair = await medianOf(opts.runs, async () => ({ dist: (await once(`${reg.host}/hf/${REPO}:main`)).secs, warm: (await once(`${p.host}/hf/${REPO}:main`)).secs }));
      await p.stop();
      const dist = { secs: pair.dist };
      const warm = { secs: pair.warm };
      rows.push([cl.name, "distribution", secs(dist.secs), mbs(model.bytes, dist.secs), "100 %"]);
      rows.push([cl.name, "cake proxy, cold", secs(cold.secs), mbs(model.bytes, cold.secs), pct(dist.secs / cold.secs)]);
      rows.push([cl.name, "cake proxy, warm", secs(warm.secs), mbs(model.bytes, warm.secs), pct(dist.secs / warm.secs)]);
      targets.push({ what: `warm proxy >= 80 % of distribution's blob serving rate (${cl.name})`, measured: pct(dist.secs / warm.secs), met: dist.secs / warm.secs >= 0.8 });
    }
    return {
      name: "proxy",
      title: "5. Proxy, cold and warm",
      setup: [
        `${mb(model.bytes)} MB model; Hub emulation uncapped on loopback; the client pulls \`<host>/hf/${REPO}:main\` from the proxy and from distribution (same artifact, pushed by cake); median of ${opts.runs} runs`,
        "cold: a fresh proxy with an empty store per run; warm: the same proxy after one pull, its runs alternating with distribution's",
      ],
      header: ["client", "server", "seconds", "MB/s", "vs distribution"],
      rows,
      targets,
      notes: [],
    };
  } finally {
    await scratch.cleanup();
  }
}
