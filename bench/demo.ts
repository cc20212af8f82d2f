/**
 * The main job, end to end, offline (`npm ci && npm run demo`): the Hub emulation serves a generated
 * llama-like base model and a fine-tune of it; `cake proxy` turns them into OCI artifacts on its own
 * store; cake pulls base then fine-tune through the proxy (and oras too, when it is installed), shows
 * that the fine-tune cost only its changed tensors, exports both, checks every file byte for byte
 * against the originals, prints where everything is, and stops what it started.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { pidAlive } from "../src/store/pid.js";
import { startHub } from "../test/hub/emulator.js";
import { dirBytes, hashTree, makeFineTune, makeLlamaLike } from "../test/fixtures/models.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const cakeBin = path.join(root, "bin", "cake");
const say = (s: string) => process.stdout.write(`${s}\n`);
const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

/** A command, its output shown as it runs (async: the Hub emulation lives in this process). */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, show = true): Promise<string> {
  if (show) say(`$ ${cmd === process.execPath ? "cake" : path.basename(cmd)} ${args.join(" ")}`);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, cmd === process.execPath ? [cakeBin, ...args] : args, { env, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (d) => {
      out += d;
      if (show) process.stdout.write(d);
    });
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`${path.basename(cmd)} ${args[0]} exited ${code}`))));
  });
}

const cake = (args: string[], env: NodeJS.ProcessEnv, show = true) => run(process.execPath, args, env, show);

function findOras(): string | undefined {
  const dirs = [path.join(os.homedir(), "go", "bin"), ...(process.env.GOPATH ? [path.join(process.env.GOPATH, "bin")] : []), ...(process.env.PATH ?? "").split(":")];
  return dirs.map((d) => path.join(d, "oras")).find((p) => fs.existsSync(p));
}

async function sameFiles(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([hashTree(a), hashTree(b)]);
  return x.size === y.size && [...x].every(([f, h]) => y.get(f) === h);
}

/**
 * Where this run keeps everything: `$TMPDIR/cake-demo`, replacing the previous run's (each leaves
 * about 1 GB to look at; run after run they would pile up). A directory of its own (kept) while
 * another demo is still running there, or when the previous one cannot be removed.
 */
async function workDir(): Promise<{ dir: string; replacedNextTime: boolean }> {
  const dir = path.join(os.tmpdir(), "cake-demo");
  const pidFile = path.join(dir, "demo.pid");
  const other = Number(await fsp.readFile(pidFile, "utf8").catch(() => ""));
  if (!pidAlive(other)) {
    try {
      await fsp.rm(dir, { recursive: true, force: true });
      await fsp.mkdir(dir);
      await fsp.writeFile(pidFile, String(process.pid));
      return { dir, replacedNextTime: true };
    } catch {
      // someone else's, or in use: fall through to a directory of this run's own
    }
  }
  return { dir: await fsp.mkdtemp(`${dir}-`), replacedNextTime: false };
}

async function main() {
  const { dir: work, replacedNextTime } = await workDir();
  const base = path.join(work, "models", "tiny-llama");
  const ft = path.join(work, "models", "tiny-llama-ft");
  say(`demo: generating a llama-like model and a fine-tune of its top layer in ${path.dirname(base)}`);
  await makeLlamaLike(base, { hidden: 1024, layers: 4, vocab: 8192, shards: 2 });
  const changed = ["q", "k", "v", "o"].map((w) => `model.layers.3.self_attn.${w}_proj.weight`);
  await makeFineTune(base, ft, changed);

  const hub = await startHub();
  hub.addRepo("acme/tiny-llama");
  hub.addRepo("acme/tiny-llama-ft");
  const commit = await hub.commit("acme/tiny-llama", base);
  await hub.commit("acme/tiny-llama-ft", ft);
  say(`demo: Hub emulation at ${hub.url} (its CDN at ${hub.cdnUrl}): acme/tiny-llama@${commit.slice(0, 12)}, acme/tiny-llama-ft`);

  const env = { ...process.env, HF_ENDPOINT: hub.url, HF_TOKEN: "", CAKE_HOME: path.join(work, "store"), HF_HOME: path.join(work, "hf") };
  let proxy: ChildProcess | undefined;
  let ok = true;
  try {
    // The proxy, on its own store, in front of the Hub.
    proxy = spawn(process.execPath, [cakeBin, "proxy", "--port", "0", "--hub", hub.url, "--store", path.join(work, "proxy-store"), "--quiet"], { env, stdio: ["ignore", "pipe", "inherit"] });
    const proxyUrl = await new Promise<string>((resolve, reject) => {
      let out = "";
      proxy!.stdout!.on("data", (d) => {
        out += d;
        const m = /^(http:\/\/\S+)\n/.exec(out);
        if (m) resolve(m[1]!);
      });
      proxy!.on("close", (code) => reject(new Error(`cake proxy exited ${code}`)));
    });
    const host = proxyUrl.replace(/^http:\/\//, "");
    say(`demo: cake proxy at ${proxyUrl}\n`);

    hub.counters.reset();
    await cake(["pull", `${host}/hf/acme/tiny-llama:main`], env);
    const hubBytesBase = hub.counters.bytesServed;
    await cake(["pull", `${host}/hf/acme/tiny-llama-ft:main`], env);
    say("");
    await cake(["diff", `${host}/hf/acme/tiny-llama:main`, `${host}/hf/acme/tiny-llama-ft:main`], env);
    say("");
    await cake(["ls"], env);

    const oras = findOras();
    let orasDir: string | undefined;
    if (oras) {
      orasDir = path.join(work, "oras-pull");
      say("");
      const args = ["pull", "--plain-http", "-o", orasDir, `${host}/hf/acme/tiny-llama-ft:main`];
      say(`$ oras ${args.join(" ")}`);
      await run(oras, args, env, false);
      say(`(oras wrote ${(await fsp.readdir(orasDir)).filter((f) => f !== ".cake").join(", ")} and .cake/ with the recipe and tensor blobs)`);
    } else say("\ndemo: oras is not installed (bash .ci/setup installs it); skipping the oras pull");

    // The same, straight from the Hub (no registry, no proxy): the fine-tune's unchanged tensors are
    // taken from the base already in the store, proven by each file's sha256 against the Hub's.
    say("\ndemo: straight from the Hub, into a store of its own");
    const direct = { ...env, CAKE_HOME: path.join(work, "hub-store") };
    await cake(["pull", "hf://acme/tiny-llama"], direct);
    hub.counters.reset();
    await cake(["pull", "hf://acme/tiny-llama-ft"], direct);
    const hubBytesFt = hub.counters.bytesServed;
    const outDirect = path.join(work, "export", "tiny-llama-ft-from-hub");
    await cake(["export", "hf://acme/tiny-llama-ft", outDirect], direct);

    say("");
    const outBase = path.join(work, "export", "tiny-llama");
    const outFt = path.join(work, "export", "tiny-llama-ft");
    await cake(["export", `${host}/hf/acme/tiny-llama:main`, outBase], env);
    await cake(["export", `${host}/hf/acme/tiny-llama-ft:main`, outFt], env);
    const outOras = orasDir ? path.join(work, "export", "from-oras") : undefined;
    if (orasDir && outOras) await cake(["export", orasDir, outOras], env);

    const checks: [string, boolean][] = [
      ["base, exported", await sameFiles(base, outBase)],
      ["fine-tune, exported", await sameFiles(ft, outFt)],
      ...(outOras ? [["fine-tune, from the oras pull", await sameFiles(ft, outOras)] as [string, boolean]] : []),
      ["fine-tune, pulled straight from the Hub", await sameFiles(ft, outDirect)],
    ];
    const diff = JSON.parse(await cake(["diff", "--json", `${host}/hf/acme/tiny-llama:main`, `${host}/hf/acme/tiny-llama-ft:main`], env, false)) as { transferBytes: number; totalBytes: number; changed: { tensors: number } };
    say(`\ndemo: results`);
    for (const [what, same] of checks) say(`  ${same ? "OK  " : "FAIL"} ${what}: byte-identical to the original`);
    say(`  dedup: the fine-tune changed ${diff.changed.tensors} tensors; pulling it next to the base moved ${mib(diff.transferBytes)} of its ${mib(diff.totalBytes)}`);
    const baseBytes = await dirBytes(base);
    // Beyond the model's size: the tensor bytes each shard's one header request took along (under 64 KiB a shard).
    const headerExtra = hubBytesBase > baseBytes ? `; ${((hubBytesBase - baseBytes) / 1024).toFixed(0)} KiB more came along with the headers` : "";
    say(`  straight from the Hub: the fine-tune after its base cost ${mib(hubBytesFt)} from the Hub of its ${mib(await dirBytes(ft))} (the changed tensors, the headers and the samples)`);
    say(`  the Hub served ${mib(hubBytesBase)} for the base (its size: ${mib(baseBytes)}${headerExtra}) — once, to the proxy`);
    say(`\ndemo: where everything is (${replacedNextTime ? "the next demo replaces it; " : ""}remove with: rm -rf ${work})`);
    say(`  originals      ${path.dirname(base)}`);
    say(`  cake store     ${env.CAKE_HOME}   (an OCI image layout)`);
    say(`  proxy store    ${path.join(work, "proxy-store")}`);
    say(`  exports        ${path.join(work, "export")}`);
    if (orasDir) say(`  oras pull      ${orasDir}`);
    ok = checks.every(([, same]) => same);
  } finally {
    proxy?.kill("SIGTERM");
    await hub.close();
  }
  say(`\ndemo: ${ok ? "OK" : "FAILED"} (the Hub emulation and the proxy are stopped)`);
  if (!ok) process.exitCode = 1;
}

main().catch((err) => {
  process.stderr.write(`demo: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
