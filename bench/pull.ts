/**
 * Pull benchmark: cake against huggingface_hub's snapshot_download, both pulling the same generated
 * model from the Hub emulation with a per-connection bandwidth cap and added latency (a CDN serves one
 * stream at a fraction of the link). Prints wall time, throughput and peak memory (max RSS, from
 * /usr/bin/time), and cake's ratio against the peer. Run on demand:
 *
 *   npm run build && node dist/bench/pull.js [--mb 512] [--bandwidth 25] [--latency 20]
 *
 * --bandwidth is MB/s per connection (0 = none), --latency ms per request.
 */
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startHub } from "../test/hub/emulator.js";
import { hashTree, makeLlamaLike } from "../test/fixtures/models.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};

/** Runs a command under /usr/bin/time; resolves with seconds and max RSS (KiB). */
function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ secs: number; rssKiB: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn("/usr/bin/time", ["-f", "@@%e %M", cmd, ...args], { env, stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    child.on("close", (code) => {
      const m = /@@([\d.]+) (\d+)/.exec(err);
      if (code !== 0 || !m) return reject(new Error(`${cmd} failed (${code}): ${err.slice(-500)}`));
      resolve({ secs: Number(m[1]), rssKiB: Number(m[2]) });
    });
  });
}

async function main() {
  const mb = arg("mb", 512);
  const bandwidth = arg("bandwidth", 25) * 1e6;
  const latency = arg("latency", 20);
  // hidden 2048: each layer ~ 4 attention (8-16 MiB) + 3 MLP matrices (~44 MiB): about 150 MiB a layer.
  const layers = Math.max(1, Math.round(mb / 150));
  const modelDir = path.join(os.tmpdir(), `cake-bench-model-${layers}`);
  if (!(await fs.stat(path.join(modelDir, "config.json")).catch(() => undefined))) {
    process.stderr.write(`bench: generating a ${layers}-layer model in ${modelDir}\n`);
    await makeLlamaLike(modelDir, { hidden: 2048, layers, vocab: 16384, shards: Math.max(1, Math.ceil(layers / 2)) });
  }
  let bytes = 0;
  for (const f of await fs.readdir(modelDir)) bytes += (await fs.stat(path.join(modelDir, f))).size;
  const hub = await startHub({ bandwidth, latencyMs: latency });
  hub.addRepo("bench/model");
  await hub.commit("bench/model", modelDir);
  const work = await fs.mkdtemp(path.join(os.tmpdir(), "cake-bench-"));
  const base = { ...process.env, HF_ENDPOINT: hub.url, HF_HUB_DISABLE_XET: "1", HF_HUB_DISABLE_TELEMETRY: "1", HF_HUB_DISABLE_PROGRESS_BARS: "1" };
  const rows: { tool: string; secs: number; rssKiB: number }[] = [];
  try {
    const cakeEnv = { ...base, CAKE_HOME: path.join(work, "cake") };
    rows.push({ tool: "cake pull", ...(await timed(process.execPath, [path.join(root, "bin", "cake"), "pull", "-q", "hf://bench/model"], cakeEnv)) });
    const out = path.join(work, "export");
    rows.push({ tool: "cake export", ...(await timed(process.execPath, [path.join(root, "bin", "cake"), "export", "-q", "hf://bench/model", out], cakeEnv)) });
    const hfDir = path.join(work, "hf-local");
    rows.push({
      tool: "huggingface_hub snapshot_download",
      ...(await timed("python3", ["-c", `from huggingface_hub import snapshot_download; snapshot_download('bench/model', local_dir=${JSON.stringify(hfDir)})`], { ...base, HF_HOME: path.join(work, "hf") })),
    });
    const [a, b] = await Promise.all([hashTree(out), hashTree(modelDir)]);
    if (a.size !== b.size || [...b].some(([f, h]) => a.get(f) !== h)) throw new Error("cake export differs from the model");
  } finally {
    await hub.close();
    await fs.rm(work, { recursive: true, force: true });
  }
  const peer = rows[2]!;
  process.stdout.write(`\nmodel ${(bytes / 2 ** 20).toFixed(0)} MiB, per-connection cap ${bandwidth ? `${bandwidth / 1e6} MB/s` : "none"}, latency ${latency} ms, ${os.cpus().length} cores\n\n`);
  process.stdout.write(`${"tool".padEnd(36)}${"seconds".padStart(9)}${"MB/s".padStart(9)}${"max RSS".padStart(11)}${"time vs peer".padStart(14)}\n`);
  for (const r of rows) {
    const ratio = r.tool === "cake pull" ? `${(peer.secs / r.secs).toFixed(2)}x faster` : "";
    process.stdout.write(`${r.tool.padEnd(36)}${r.secs.toFixed(2).padStart(9)}${(bytes / 1e6 / r.secs).toFixed(0).padStart(9)}${`${(r.rssKiB / 1024).toFixed(0)} MiB`.padStart(11)}${ratio.padStart(14)}\n`);
  }
}

main().catch((err) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
