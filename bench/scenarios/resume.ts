/**
 * Scenario 4, resume: a pull from the Hub (capped network) is killed (SIGKILL) once half the model's
 * bytes were served, then run again to the end. Bytes fetched twice = what both runs were served minus
 * what one uninterrupted pull is served (Hub counters, content bytes). huggingface_hub's
 * snapshot_download under the same treatment for comparison.
 */
import type { ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { startHub, type Hub } from "../../test/hub/emulator.js";
import { DEFAULT_CHUNK, WRITE_BATCH } from "../../src/transfer/defaults.js";
import { cakeEnv, hfEnv, hfSnapshotArgs, type Models, type Options } from "../lib/context.js";
import { ensureHfHub } from "../lib/peers.js";
import { CAKE, cake, Scratch, sleep, start, timed } from "../lib/proc.js";
import { mb, secs, type Section } from "../lib/report.js";

const REPO = "bench/model";
const STREAMS = 16;
const JOURNAL_EVERY = 256 << 10; // src/store/ingest.ts (not exported): a running range records its progress this often

/** Starts `spawnIt`, SIGKILLs it once the Hub has served `at` bytes; resolves with the bytes served by then. */
async function killAt(hub: Hub, at: number, spawnIt: () => ChildProcess): Promise<number> {
  hub.counters.reset();
  const child = spawnIt();
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  let done = false;
  void exited.then(() => (done = true));
  while (!done && hub.counters.bytesServed < at) await sleep(2);
  if (done) throw new Error(`the client finished before ${mb(at)} MB were served: use a bigger --mb or a lower --bandwidth`);
  child.kill("SIGKILL");
  await exited;
  // Let the server notice the closed sockets (it counts what it handed to them) before the rerun's
  // count starts: until its count has stood still for 200 ms (at most 3 s), not a fixed 100 ms.
  const until = performance.now() + 3000;
  for (let last = -1, still = performance.now(); performance.now() < until; await sleep(20)) {
    if (hub.counters.bytesServed !== last) [last, still] = [hub.counters.bytesServed, performance.now()];
    else if (performance.now() - still >= 200) break;
  }
  return hub.counters.bytesServed;
}

/** Merges ranges and sums their lengths. */
function covered(ranges: [number, number][]): number {
  let n = 0;
  let end = -1;
  for (const [a, b] of [...ranges].sort((x, y) => x[0] - y[0])) {
    if (b <= end) continue;
    n += b - Math.max(a, end);
    end = b;
  }
  return n;
}

/**
 * Bytes of the model a killed cake left where a rerun finds them (docs/architecture.md, the store
 * layout): the Hub ranges recorded in cake/ranges/, and the journaled ranges of each ingest partial
 * file (clipped to the file's size, as src/store/ingest.ts does when it opens one).
 */
async function cakeKept(store: string): Promise<number> {
  let n = 0;
  const rangesDir = path.join(store, "cake", "ranges");
  for (const f of await fs.readdir(rangesDir).catch(() => [] as string[])) {
    const rs: [number, number][] = [];
    for (const line of (await fs.readFile(path.join(rangesDir, f), "utf8")).split("\n")) {
      const m = /^(\d+) (\d+) /.exec(line);
      if (m) rs.push([Number(m[1]), Number(m[2])]);
    }
    n += covered(rs);
  }
  const ingest = path.join(store, "ingest");
  for (const f of await fs.readdir(ingest).catch(() => [] as string[])) {
    if (!f.endsWith(".journal")) continue;
    const size = (await fs.stat(path.join(ingest, f.replace(/\.journal$/, ".partial"))).catch(() => undefined))?.size ?? 0;
    const rs: [number, number][] = [];
    for (const line of (await fs.readFile(path.join(ingest, f), "utf8")).split("\n")) {
      const m = /^(\d+) (\d+)$/.exec(line);
      if (m) rs.push([Number(m[1]), Math.min(Number(m[2]), size)]);
    }
    n += covered(rs.filter(([a, b]) => b > a));
  }
  return n;
}

/**
 * Bytes a killed snapshot_download left in its cache that a rerun uses: finished blobs only.
 * huggingface_hub 2.4.0 downloads into `<etag>.<uuid8>.incomplete`, a new name per attempt
 * (file_download.py), so a partial file from a killed process is never resumed (and stays behind).
 */
async function hfKept(home: string): Promise<number> {
  const blobs = path.join(home, "hub", `models--${REPO.replace("/", "--")}`, "blobs");
  let n = 0;
  for (const f of await fs.readdir(blobs).catch(() => [] as string[])) if (!f.endsWith(".incomplete")) n += (await fs.stat(path.join(blobs, f))).size;
  return n;
}

export async function resume(models: Models, opts: Options): Promise<Section> {
  const python = await ensureHfHub();
  const model = await models.base();
  const scratch = new Scratch();
  try {
    const hub = await startHub({ bandwidth: opts.bandwidth * 1e6, latencyMs: opts.latencyMs });
    scratch.defer(() => hub.close());
    await hub.commit(REPO, model.dir);

    const measure = async (
      full: (d: string) => Promise<unknown>,
      spawnIt: (d: string) => ChildProcess,
      rerun: (d: string) => Promise<{ secs: number }>,
      kept: (d: string) => Promise<number>,
    ) => {
      const samples: { killedAt: number; kept: number; again: number; waste: number; secs: number }[] = [];
      for (let i = 0; i < opts.runs; i++) {
        const d0 = await scratch.dir("resume-full");
        hub.counters.reset();
        await full(d0);
        const whole = hub.counters.bytesServed;
        await fs.rm(d0, { recursive: true, force: true });

        const d = await scratch.dir("resume");
        const first = await killAt(hub, model.bytes / 2, () => spawnIt(d));
        const k = await kept(d);
        hub.counters.reset();
        const t = await rerun(d);
        const second = hub.counters.bytesServed;
        // fetched twice = all served - one pull; of it, "waste" = what the rerun fetched beyond what the kill left missing.
        samples.push({ killedAt: first, kept: k, again: first + second - whole, waste: second - (whole - k), secs: t.secs });
        await fs.rm(d, { recursive: true, force: true });
      }
      // Every figure from the same run, the one with the median bytes fetched twice, so they add up.
      const mid = [...samples].sort((a, b) => a.again - b.again)[(samples.length - 1) >> 1]!;
      return { ...mid, samples: samples.map((x) => x.again) };
    };

    const c = await measure(
      (d) => cake(["pull", "-q", `hf://${REPO}`], cakeEnv(hub, d)),
      (d) => start(process.execPath, [CAKE, "pull", "-q", `hf://${REPO}`], { env: cakeEnv(hub, d) }),
      (d) => cake(["pull", "-q", `hf://${REPO}`], cakeEnv(hub, d)),
      cakeKept,
    );
    const h = await measure(
      (d) => timed(python, hfSnapshotArgs(REPO), { env: hfEnv(hub, d) }),
      (d) => start(python, hfSnapshotArgs(REPO), { env: hfEnv(hub, d) }),
      (d) => timed(python, hfSnapshotArgs(REPO), { env: hfEnv(hub, d) }),
      hfKept,
    );
    // The same for cake with a cap 8x lower: the emulator then hands 8x smaller pieces to each socket
    // (cap/200, test/hub/emulator.ts PACE_HZ), so what is lost at the kill shows how much of it is the emulation's granularity.
    const fine = opts.bandwidth / 8;
    hub.setKnobs({ bandwidth: fine * 1e6, latencyMs: opts.latencyMs });
    const cFine = await measure(
      (d) => cake(["pull", "-q", `hf://${REPO}`], cakeEnv(hub, d)),
      (d) => start(process.execPath, [CAKE, "pull", "-q", `hf://${REPO}`], { env: cakeEnv(hub, d) }),
      (d) => cake(["pull", "-q", `hf://${REPO}`], cakeEnv(hub, d)),
      cakeKept,
    );
    const chunkBound = STREAMS * DEFAULT_CHUNK;
    // What cake itself can lose per stream: bytes gathered but not yet written, plus written but not yet journaled;
    // what the emulation can count as served but never delivered: one piece of cap/200 bytes per stream.
    const fmt = (x: number) => `${mb(x)} MB`;
    return {
      name: "resume",
      title: "4. Resume after a kill at 50 %",
      setup: [
        `${mb(model.bytes)} MB model from the Hub, capped ${opts.bandwidth} MB/s per connection, ${opts.latencyMs} ms; the client is SIGKILLed once half of it was served, then run again`,
        `bytes fetched twice = served to both runs - served to one uninterrupted pull (Hub counters: bytes handed to sockets, so bytes a killed client never read count as fetched); ${opts.runs} runs, the figures are those of the median run`,
      ],
      header: ["client", "served before the kill", "kept on disk for the rerun", "lost at the kill", "fetched again though kept", "fetched twice", "rerun seconds", "runs (fetched twice)"],
      rows: [c, h, cFine].map((x, i) => [
        [`cake pull hf:// (16 streams), ${opts.bandwidth} MB/s/conn`, `huggingface_hub snapshot_download, ${opts.bandwidth} MB/s/conn`, `cake pull hf:// (16 streams), ${fine} MB/s/conn`][i]!,
        fmt(x.killedAt),
        fmt(x.kept),
        fmt(x.killedAt - x.kept),
        fmt(Math.max(0, x.waste)),
        fmt(x.again),
        secs(x.secs),
        x.samples.map(fmt).join(", "),
      ]),
      targets: [
        {
          what: `resume re-fetches <= one chunk (DEFAULT_CHUNK, ${DEFAULT_CHUNK >> 20} MiB) per in-flight stream: ${STREAMS} × ${DEFAULT_CHUNK >> 20} MiB = ${fmt(chunkBound)}`,
          measured: `${fmt(c.again)} (nothing kept was fetched again: ${fmt(Math.max(0, c.waste))})`,
          met: c.again <= chunkBound,
        },
        {
          what: "(stricter) nothing that was on disk at the kill is fetched again: the rerun is served at most 1 % more than the kill left missing (at both caps)",
          measured: `${fmt(Math.max(0, c.waste))} more at ${opts.bandwidth} MB/s/conn; ${fmt(Math.max(0, cFine.waste))} more at ${fine} MB/s/conn`,
          met: c.waste <= 0.01 * (model.bytes - c.kept) && cFine.waste <= 0.01 * (model.bytes - cFine.kept),
        },
      ],
      notes: [
        "kept on disk = what the rerun can use: for cake the Hub ranges recorded in cake/ranges/ plus the journaled ranges of the ingest partial files; for huggingface_hub the finished blobs only: 2.4.0 names each attempt's partial file `<etag>.<uuid8>.incomplete` (file_download.py), so a new process never resumes one (they stay behind in the cache). " +
          `lost at the kill = served - kept: bytes in the kernel's socket buffers (on loopback they grow to MBs per connection: tcp_wmem up to 4 MiB, tcp_rmem up to 32 MiB; an 8 MiB Range request can fill them, a 2 MiB one could not), bytes the emulator handed to a socket but the client never read (with a cap it hands over cap/200 bytes at a time, 200 kB at 40 MB/s, and counts them as served), bytes cake gathered but had not written yet (up to WRITE_BATCH, ${WRITE_BATCH >> 10} KiB, per stream: src/transfer/engine.ts fetchRange) and bytes written but not yet journaled (every ${JOURNAL_EVERY >> 10} KiB per stream, src/store/ingest.ts). ` +
          "fetched again though kept = what the rerun was served beyond what the kill left missing (resume waste proper; over slow connections it also holds what splitting the tail costs: the bytes in flight past the cut when a slow stream hands half its rest to an idle one, src/transfer/engine.ts stealFrom).",
      ],
    };
  } finally {
    await scratch.cleanup();
  }
}
