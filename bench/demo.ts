/**
 * The main job, end to end, offline: a generated llama-like model served by the Hub emulation,
 * `cake pull hf://acme/tiny-llama`, `cake ls`, `cake export`, and a byte-for-byte check of every
 * exported file against the original. `npm run demo` (after `npm ci`).
 */
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startHub } from "../test/hub/emulator.js";
import { hashTree, makeLlamaLike } from "../test/fixtures/models.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const cakeBin = path.join(root, "bin", "cake");

async function main() {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), "cake-demo-"));
  const model = path.join(work, "tiny-llama");
  process.stdout.write(`demo: generating a llama-like model in ${model}\n`);
  await makeLlamaLike(model, { hidden: 1024, layers: 4, vocab: 8192, shards: 2 });
  const hub = await startHub();
  hub.addRepo("acme/tiny-llama");
  const commit = await hub.commit("acme/tiny-llama", model);
  process.stdout.write(`demo: Hub emulation at ${hub.url} (CDN ${hub.cdnUrl}), acme/tiny-llama@main = ${commit}\n\n`);
  const env = { ...process.env, HF_ENDPOINT: hub.url, CAKE_HOME: path.join(work, "store"), HF_HOME: path.join(work, "hf") };
  const run = (...args: string[]) => {
    process.stdout.write(`$ cake ${args.join(" ")}\n`);
    // Async-safe: the hub runs in this process, so the CLI must not block our event loop.
    return new Promise<void>((resolve, reject) => {
      const child = spawn(process.execPath, [cakeBin, ...args], { env, stdio: "inherit" });
      child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`cake ${args[0]} exited ${code}`))));
    });
  };
  try {
    const t0 = Date.now();
    await run("pull", "hf://acme/tiny-llama");
    const pullSecs = (Date.now() - t0) / 1000;
    await run("ls");
    const out = path.join(work, "export");
    await run("export", "hf://acme/tiny-llama", out);
    const [want, got] = await Promise.all([hashTree(model), hashTree(out)]);
    let bytes = 0;
    for (const f of want.keys()) bytes += (await fs.stat(path.join(model, f))).size;
    const same = want.size === got.size && [...want].every(([f, h]) => got.get(f) === h);
    process.stdout.write(`\ndemo: ${want.size} files, ${(bytes / 2 ** 20).toFixed(1)} MiB pulled in ${pullSecs.toFixed(2)} s; export ${same ? "byte-identical to the original: OK" : "DIFFERS from the original: FAIL"}\n`);
    if (!same) process.exitCode = 1;
  } finally {
    await hub.close();
    await fs.rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`demo: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
