/**
 * cake's benchmarks against its peers (huggingface_hub, oras, crane, cp) on an emulated network, run on
 * demand. Each scenario prints a markdown table, checks its targets, and rewrites its own section of
 * docs/benchmarks.md. Generated models, stores, servers and temp dirs are removed at the end.
 *
 *   npm run bench -- [scenario ...] [--runs 3] [--mb 512] [--mb2 2048] [--bandwidth 40] [--latency 30]
 *                    [--ft-layers 2] [--shards 3] [--models DIR] [--no-write]
 *
 * Scenarios: cold, finetune, reshard, resume, proxy, export, rss, profile, faults, hubdedup, scaleout, modelpack, mpfinetune, compress; none or `all` = every one.
 */
import os from "node:os";
import { DEFAULTS, Models, type Options } from "./lib/context.js";
import { render, revision, writeSection, type Section } from "./lib/report.js";
type Scenario = (m: Models, o: Options) => Promise<Section>;

/**
 * Each scenario is loaded when it runs: some use test helpers that import vitest, a dev dependency
 * that the packed bench of the 16-core machine (bench/device/) leaves out.
 */
const SCENARIOS: Record<string, () => Promise<Scenario>> = {
  cold: async () => (await import("./scenarios/cold.js")).cold,
  finetune: async () => (await import("./scenarios/finetune.js")).fineTune,
  reshard: async () => (await import("./scenarios/reshard.js")).reshardScenario,
  resume: async () => (await import("./scenarios/resume.js")).resume,
  proxy: async () => (await import("./scenarios/proxy.js")).proxy,
  export: async () => (await import("./scenarios/export.js")).exportAndPush,
  rss: async () => (await import("./scenarios/rss.js")).rss,
  profile: async () => (await import("./scenarios/profile.js")).profile,
  faults: async () => (await import("./scenarios/faults.js")).faults,
  hubdedup: async () => (await import("./scenarios/hubdedup.js")).hubDedup,
  scaleout: async () => (await import("./scenarios/scaleout.js")).scaleOut,
  modelpack: async () => (await import("./scenarios/modelpack.js")).modelPack,
  mpfinetune: async () => (await import("./scenarios/mpfinetune.js")).modelPackFineTune,
  compress: async () => (await import("./scenarios/compress.js")).compress,
};

const NUMERIC: Record<string, keyof Options> = {
  runs: "runs",
  mb: "mb",
  mb2: "mb2",
  bandwidth: "bandwidth",
  latency: "latencyMs",
  "ft-layers": "ftLayers",
  shards: "shards",
};

function parseArgs(argv: string[]): { names: string[]; opts: Options } {
  const opts: Options = { ...DEFAULTS };
  const names: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--no-write") opts.write = false;
    else if (a === "--models") opts.models = argv[++i];
    else if (a.startsWith("--") && NUMERIC[a.slice(2)]) {
      const n = Number(argv[++i]);
      if (!Number.isFinite(n) || n < 0) throw new Error(`${a} needs a number`);
      (opts[NUMERIC[a.slice(2)]!] as number) = n;
    } else if (a === "all") names.push(...Object.keys(SCENARIOS));
    else if (SCENARIOS[a]) names.push(a);
    else throw new Error(`unknown argument ${a}; scenarios: ${Object.keys(SCENARIOS).join(", ")}, all`);
  }
  if (opts.runs < 1) throw new Error("--runs must be at least 1");
  return { names: names.length ? [...new Set(names)] : Object.keys(SCENARIOS), opts };
}

async function main() {
  const { names, opts } = parseArgs(process.argv.slice(2));
  // Every node process reads NODE_EXTRA_CA_CERTS at start, before any code runs (about 60 ms on the
  // development machine, whose sandbox sets it). Nothing here speaks TLS: measure every command as
  // it starts on a machine without it, and say so.
  if (process.env.NODE_EXTRA_CA_CERTS) {
    delete process.env.NODE_EXTRA_CA_CERTS;
    process.stderr.write("bench: NODE_EXTRA_CA_CERTS unset for every command (only loopback HTTP is measured)\n");
  }
  const models = new Models(opts);
  let failed = 0;
  try {
    for (const name of names) {
      process.stderr.write(`bench: ${name}\n`);
      const t0 = Date.now();
      const load0 = os.loadavg()[0]!;
      const rev = await revision();
      try {
        const section = await (await SCENARIOS[name]!())(models, opts);
        // Other work on the machine inflates every time: say how busy it was.
        section.setup.push(`machine load (1-minute load average): ${load0.toFixed(1)} at the start, ${os.loadavg()[0]!.toFixed(1)} at the end (2 cores; the bench itself keeps about 2 busy)`);
        process.stdout.write(`\n${render(section)}\n`);
        if (opts.write) await writeSection(section, rev);
      } catch (err) {
        failed++;
        process.stderr.write(`bench: ${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      }
      process.stderr.write(`bench: ${name} took ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
    }
  } finally {
    await models.cleanup();
  }
  if (failed) process.exitCode = 1;
}

main().catch((err) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
