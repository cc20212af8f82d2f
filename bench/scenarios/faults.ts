/**
 * Scenario 8, faults (issue 15: every request survives a cut answer). On the cold scenario's default
 * link (capped per connection, with latency), the Hub emulation cuts every 3rd answer half-way (any
 * answer: model info, tree, redirects, header reads, CDN bytes), and:
 *  1. `cake pull hf://` of the --mb2 model (2 GB) ends byte-identical (`cake export` + sha256 of every
 *     file against the model), for few extra Hub bytes; the same pull without cuts beside it;
 *  2. 16 `cake pull <proxy>/hf/<repo>:main` (and 16 `oras pull`) at once through one cold `cake proxy`
 *     (the --mb model): how many end, and what the Hub served;
 *  3. one request of the pull gets a 429 with the Hub's `RateLimit: "<bucket>";r=0;t=30` (no
 *     Retry-After): the pull waits it out, finishes, and says why on stderr.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { hashTree } from "../../test/fixtures/models.js";
import { cutEvery } from "../../test/helpers/cut-answer.js";
import { startHub, type CutRequest, type Hub } from "../../test/hub/emulator.js";
import { startCakeProxy } from "../lib/cake-proxy.js";
import { cakeEnv, type Models, type Options } from "../lib/context.js";
import { ensureOras } from "../lib/peers.js";
import { CAKE, cake, median, run, Scratch, timed } from "../lib/proc.js";
import { mb, secs, type Section } from "../lib/report.js";

const BIG = "bench/big";
const SMALL = "bench/model";
const CLIENTS = 16;
const CUT_EVERY = 3;
const CUT_AT = 0.5;
const RATE_LIMIT_SECONDS = 30;
/** Most Hub bytes per model byte a pull under cuts may take. */
const MAX_OVERHEAD = 1.05;
/**
 * The most one write of an answer's body carries in the emulation (test/hub/emulator.ts READ_CHUNK;
 * capped, a 5 ms slice, less). It counts a write in `bytesServed` once the socket took it: the write
 * a cut falls in is not counted, though its bytes up to the cut went out.
 */
const WRITE_MAX = 256 * 1024;

const ratio = (served: number, model: number) => `${(served / model).toFixed(3)}x`;

/** Whether `dir` holds exactly the files of `want` (relative path -> sha256). */
async function sameFiles(dir: string, want: Map<string, string>): Promise<boolean> {
  const got = await hashTree(dir);
  return got.size === want.size && [...want].every(([f, h]) => got.get(f) === h);
}

interface Counted {
  served: number;
  /** `served` plus, for each cut GET, the write the cut fell in: what the Hub sent at most. */
  servedAtMost: number;
  cuts: number;
  requests: number;
}

/** "Hub bytes / model" for a table cell: the count, and at most what it leaves out. */
const servedCell = (c: Pick<Counted, "served" | "servedAtMost">, model: number) =>
  c.servedAtMost > c.served ? `${ratio(c.served, model)} (≤ ${ratio(c.servedAtMost, model)})` : ratio(c.served, model);

export async function faults(models: Models, opts: Options): Promise<Section> {
  const oras = await ensureOras();
  const big = await models.base(opts.mb2);
  const small = await models.base(opts.mb);
  const began = performance.now(); // the models exist by now: what follows is the scenario itself
  const scratch = new Scratch();
  const rows: (string | number)[][] = [];
  const targets: Section["targets"] = [];
  const notes: string[] = [];
  const every3rd = cutEvery(CUT_EVERY, CUT_AT);
  let cutGets = 0; // cut answers that had a body to cut
  const cuts = (r: CutRequest) => {
    const plan = every3rd(r);
    if (plan && r.method === "GET") cutGets++;
    return plan;
  };
  const countsOf = (hub: Hub): Counted => {
    const c = hub.counters;
    return { served: c.bytesServed, servedAtMost: c.bytesServed + cutGets * WRITE_MAX, cuts: c.cut, requests: c.requests };
  };
  const resetCounts = (hub: Hub) => {
    hub.counters.reset();
    cutGets = 0;
  };
  try {
    const hub = await startHub();
    scratch.defer(() => hub.close());
    await hub.commit(BIG, big.dir);
    await hub.commit(SMALL, small.dir);
    hub.setKnobs({ bandwidth: opts.bandwidth * 1e6, latencyMs: opts.latencyMs });
    const bigFiles = await hashTree(big.dir);
    const smallFiles = await hashTree(small.dir);

    /** `cake export` of `ref` from `store` equals `want`, file for file. */
    const exportsIdentical = async (ref: string, store: string, want: Map<string, string>) => {
      const out = path.join(await scratch.dir("faults-out"), "m");
      try {
        await cake(["export", "-q", ref, out], cakeEnv(hub, store));
        return await sameFiles(out, want);
      } finally {
        await fs.rm(path.dirname(out), { recursive: true, force: true });
      }
    };

    // 1. One 2 GB pull, with and without cuts; rounds interleaved so the machine's load hits both alike.
    const pullOnce = async (cut: boolean) => {
      hub.setKnobs({ cut: cut ? cuts : undefined });
      resetCounts(hub);
      const store = await scratch.dir("faults-store");
      try {
        const t = await cake(["pull", "-q", `hf://${BIG}`], cakeEnv(hub, store));
        const c = countsOf(hub);
        hub.setKnobs({ cut: undefined });
        return { secs: t.secs, ...c, identical: await exportsIdentical(`hf://${BIG}`, store, bigFiles) };
      } finally {
        await fs.rm(store, { recursive: true, force: true });
      }
    };
    const plain: Awaited<ReturnType<typeof pullOnce>>[] = [];
    const cutRuns: typeof plain = [];
    for (let i = 0; i < opts.runs; i++) {
      plain.push(await pullOnce(false));
      cutRuns.push(await pullOnce(true));
    }
    const pullRow = (name: string, runs: typeof plain) => {
      const s = median(runs.map((r) => r.secs));
      rows.push([
        name,
        `cake pull hf:// (${mb(big.bytes)} MB)`,
        `${runs.filter((r) => r.identical).length}/${runs.length} byte-identical`,
        secs(s),
        servedCell({ served: median(runs.map((r) => r.served)), servedAtMost: median(runs.map((r) => r.servedAtMost)) }, big.bytes),
        median(runs.map((r) => r.cuts)),
        median(runs.map((r) => r.requests)),
      ]);
      return s;
    };
    const plainSecs = pullRow("no cuts", plain);
    const cutSecs = pullRow(`every ${CUT_EVERY}rd answer cut at ${CUT_AT * 100} %`, cutRuns);
    const worst = Math.max(...cutRuns.map((r) => r.servedAtMost / big.bytes));
    targets.push({
      what: `pull with every ${CUT_EVERY}rd answer cut half-way ends byte-identical`,
      measured: `${cutRuns.filter((r) => r.identical).length} of ${cutRuns.length} runs (${secs(cutSecs)} s vs ${secs(plainSecs)} s without cuts)`,
      met: cutRuns.every((r) => r.identical),
    });
    targets.push({
      what: `Hub bytes served <= ${MAX_OVERHEAD}x the model's under those cuts`,
      measured: `${ratio(median(cutRuns.map((r) => r.served)), big.bytes)} counted (median), at most ${worst.toFixed(3)}x in the worst run`,
      met: worst <= MAX_OVERHEAD,
    });

    // 2. 16 clients at once through one cold proxy, with and without cuts.
    type Pull = (ref: string, dir: string) => Promise<unknown>;
    const viaProxy = async (client: string, pull: Pull, cut: boolean, verify: boolean) => {
      hub.setKnobs({ cut: cut ? cuts : undefined });
      resetCounts(hub);
      const proxy = await startCakeProxy(scratch, hub);
      const dirs = await Promise.all(Array.from({ length: CLIENTS }, () => scratch.dir("faults-client")));
      const ref = `${proxy.host}/hf/${SMALL}:main`;
      try {
        const t0 = performance.now();
        const done = await Promise.allSettled(dirs.map((d) => pull(ref, d)));
        const wall = (performance.now() - t0) / 1000;
        const c = countsOf(hub);
        hub.setKnobs({ cut: undefined });
        const ok = done.filter((d) => d.status === "fulfilled").length;
        let identical = 0;
        if (verify) for (const [i, d] of done.entries()) if (d.status === "fulfilled" && (await exportsIdentical(ref, dirs[i]!, smallFiles))) identical++;
        const failure = done.find((d): d is PromiseRejectedResult => d.status === "rejected");
        if (failure) {
          const why = failure.reason instanceof Error ? failure.reason.message : String(failure.reason);
          notes.push(`${client}${cut ? ", cuts" : ""}: ${CLIENTS - ok} of ${CLIENTS} failed; the first: \`${why.replace(/\s+/g, " ").slice(-600)}\`; the proxy's stderr ended: \`${proxy.tail().replace(/\s+/g, " ").slice(-600)}\``);
        }
        rows.push([
          cut ? `every ${CUT_EVERY}rd Hub answer cut at ${CUT_AT * 100} %` : "no cuts",
          `${CLIENTS} × ${client} through one cold cake proxy (${mb(small.bytes)} MB)`,
          `${ok}/${CLIENTS} ended${verify ? `, ${identical} byte-identical` : ""}`,
          secs(wall),
          servedCell(c, small.bytes),
          c.cuts,
          c.requests,
        ]);
        return { ok, identical, ...c };
      } finally {
        await proxy.stop();
        for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
      }
    };
    const cakePull: Pull = (ref, d) => cake(["pull", "-q", ref], cakeEnv(undefined, d));
    const orasPull: Pull = (ref, d) => timed(oras, ["pull", "--plain-http", "--no-tty", "-o", path.join(d, "out"), ref]);
    await viaProxy("cake pull", cakePull, false, true);
    const cakeCut = await viaProxy("cake pull", cakePull, true, true);
    const orasCut = await viaProxy("oras pull", orasPull, true, false);
    targets.push({
      what: `${CLIENTS} clients through one cake proxy under cuts: all end`,
      measured: `cake pull ${cakeCut.ok}/${CLIENTS} (${cakeCut.identical} byte-identical), oras pull ${orasCut.ok}/${CLIENTS}; Hub bytes ${servedCell(cakeCut, small.bytes)} and ${servedCell(orasCut, small.bytes)} the model's`,
      met: cakeCut.identical === CLIENTS && orasCut.ok === CLIENTS,
    });

    // 3. A 429 with `RateLimit: ...;r=0;t=30` for one request of the pull, past its middle.
    const requests = median(plain.map((r) => r.requests));
    const every = Math.ceil(requests * 0.6); // a single hit: the next would be request 1.2 × requests
    const seen: (CutRequest & { at: number })[] = [];
    hub.setKnobs({
      cut: (r) => void seen.push({ ...r, at: performance.now() }), // asked once per request: a log, no cut
      fail429Every: every,
      rateLimitStyle: "ratelimit",
      retryAfterSeconds: RATE_LIMIT_SECONDS,
    });
    resetCounts(hub);
    const store = await scratch.dir("faults-store");
    const t0 = performance.now();
    const r = await run(process.execPath, [CAKE, "pull", `hf://${BIG}`], { env: cakeEnv(hub, store) });
    const wall = (performance.now() - t0) / 1000;
    const injected = hub.counters.injected429;
    hub.setKnobs({ cut: undefined, fail429Every: 0 });
    const identical = r.code === 0 && (await exportsIdentical(`hf://${BIG}`, store, bigFiles));
    await fs.rm(store, { recursive: true, force: true });
    const pathOf = (u: string) => u.split("?")[0];
    const hit = seen.find((s) => s.n === every);
    const again = hit && seen.find((s) => s.n > every && s.method === hit.method && pathOf(s.url) === pathOf(hit.url) && s.range === hit.range);
    const waited = hit && again ? (again.at - hit.at) / 1000 : NaN;
    const line = r.stderr.split("\n").find((l) => /rate limit/.test(l))?.trim();
    rows.push([
      `request ${every} of ~${requests}: 429, RateLimit t=${RATE_LIMIT_SECONDS} s`,
      `cake pull hf:// (${mb(big.bytes)} MB)`,
      `${r.code === 0 ? "ended" : `exit ${r.code}`}, ${identical ? "byte-identical" : "**not identical**"}`,
      secs(wall),
      "",
      "",
      "",
    ]);
    targets.push({
      what: `a rate limit (RateLimit r=0;t=${RATE_LIMIT_SECONDS}, no Retry-After) is waited out, said on stderr`,
      measured: `${injected} 429 given (to ${hit ? `a ${hit.method} of the ${hit.server === "hub" ? "Hub" : hit.server.toUpperCase()}${hit.range ? `, Range ${hit.range}` : ""}` : "?"}), asked again ${waited.toFixed(1)} s later; pull ${secs(wall)} s vs ${secs(plainSecs)} s without; stderr said why: ${line ? "yes (below)" : "**no**"}`,
      met: identical && injected === 1 && waited >= RATE_LIMIT_SECONDS && !!line,
    });
    notes.push(`The rate-limited pull's stderr: \`${line ?? "(nothing about a rate limit)"}\``);
    if (r.code !== 0) notes.push(`the rate-limited pull failed: \`${r.stderr.replace(/\s+/g, " ").slice(-600)}\``);

    notes.push(
      `Hub bytes: file content the emulation served (resolve + CDN bodies, as counted by its \`bytesServed\`), over the model's files; JSON, redirects and headers are not counted. The count leaves out the write a cut falls in (up to ${WRITE_MAX >> 10} KiB, part of which went out): "≤" adds a whole such write for every cut GET, so the Hub sent between the two figures. A cut answer's bytes that reached the client are kept (a Range is asked again from its last byte), so the excess is what was in flight when the connection closed. Cuts: answers the \`cut\` knob cut (\`cutEvery(${CUT_EVERY}, ${CUT_AT})\`: every ${CUT_EVERY}rd request the Hub or its CDN gets, retries included, loses its connection half-way through its status line + headers + body). Requests: every request the Hub and its CDN got, HEADs included. What a cut costs the stream it hits: a retry's backoff (125-250 ms before a first try again, src/http/retry.ts), a new connection and a round trip; with the machine this loaded, the extra time moves a lot between runs.`,
      `The proxy rows pull the --mb model (${mb(small.bytes)} MB; ${CLIENTS} stores of it on disk at once) through a fresh proxy whose store is empty: the proxy converts from the Hub while it serves; the cuts are on the Hub's side only (proxy -> Hub), the clients' connections to the proxy are whole. "byte-identical": each client's \`cake export\` of \`<proxy>/hf/${SMALL}:main\` equals the model, file for file (sha256); oras writes blobs, not the model's files, and checks their digests itself.`,
      `Rate limit: \`fail429Every\` is set so that one request of the pull (the one at 60 % of its requests) answers 429 with \`RateLimit: "<bucket>";r=0;t=${RATE_LIMIT_SECONDS}\` and \`RateLimit-Policy\`, no Retry-After; "asked again" is the time between that request and the next one for the same path and range, as the emulation saw them. The pull's other streams keep going meanwhile, so the pull takes about ${RATE_LIMIT_SECONDS} s more than without, less what was left of it.`,
    );
    return {
      name: "faults",
      title: "8. Faults: cut answers and a rate limit (issue 15)",
      setup: [
        `Hub emulation at the cold scenario's link: ${opts.bandwidth} MB/s per connection, ${opts.latencyMs} ms per request; models: Llama-shaped ${big.shape.hidden}×${big.shape.layers} (${mb(big.bytes)} MB, --mb2) and ${small.shape.hidden}×${small.shape.layers} (${mb(small.bytes)} MB, --mb) in ${big.shards} shards + index + tokenizer/config files`,
        `single pulls: median of ${opts.runs} runs each, with and without cuts interleaved, each into an empty store, each checked by \`cake export\` + sha256 of every file; proxy: one run each`,
        `this run took ${((performance.now() - began) / 60_000).toFixed(1)} minutes once the models existed (the rate-limit wait alone ${RATE_LIMIT_SECONDS + 1} s); --mb2 and --mb set the sizes`,
      ],
      header: ["faults", "client", "result", "seconds", "Hub bytes / model", "answers cut", "requests"],
      rows,
      targets,
      notes,
    };
  } finally {
    await scratch.cleanup();
  }
}
