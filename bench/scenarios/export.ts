/**
 * Scenario 6: `cake export` (store -> the original files) against `cp -r` of the same bytes, both
 * reading from a warm page cache, and `cake export --verify` (every file hashed again) against
 * `cp -r && sha256sum`; and `cake push` of a
 * pulled model to CNCF distribution on loopback against `oras cp --from-oci-layout` of the very same
 * store (cake's store is an OCI layout), each into a fresh registry.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { cakeEnv, type Models, type Options } from "../lib/context.js";
import { checkRegistry, ensureOras } from "../lib/peers.js";
import { cake, medianOf, run, Scratch, timed, type Timed } from "../lib/proc.js";
import { mb, mib, pct, secs, type Section } from "../lib/report.js";
import { startRegistry } from "../../test/registry/harness.js";
import { hubWith } from "../lib/servers.js";

const gbs = (bytes: number, s: number) => (bytes / 1e9 / s).toFixed(2);

/** The OCI layout name (org.opencontainers.image.ref.name) the store gave to a cake reference. */
export async function layoutRefName(store: string, cakeRef: string): Promise<string> {
  const index = JSON.parse(await fs.readFile(path.join(store, "index.json"), "utf8")) as { manifests: { annotations?: Record<string, string> }[] };
  const m = index.manifests.find((d) => d.annotations?.["dev.cake.ref"] === cakeRef);
  const name = m?.annotations?.["org.opencontainers.image.ref.name"];
  if (!name) throw new Error(`no ${cakeRef} in ${store}/index.json`);
  return name;
}

export async function exportAndPush(models: Models, opts: Options): Promise<Section> {
  const oras = await ensureOras();
  checkRegistry();
  const model = await models.base();
  const scratch = new Scratch();
  try {
    const hub = await hubWith(scratch, "bench/model", model.dir);
    const store = await scratch.dir("export-store");
    const env = cakeEnv(hub, store);
    await cake(["pull", "-q", "hf://bench/model"], env);

    /**
     * Seconds and RSS of `cmd` writing into `<fresh dir>/out` (removed after). It starts after a
     * `sync`: no write-back of an earlier run's dirty pages competes with it (cp and cake alike).
     */
    const intoFresh = async (prefix: string, cmd: (out: string) => Promise<Timed>) => {
      const d = await scratch.dir(prefix);
      await run("sync", []);
      const t = await cmd(path.join(d, "out"));
      await fs.rm(d, { recursive: true, force: true });
      return t;
    };
    /** Median seconds and RSS of `run`, without an output directory. */
    const repeat = (run: () => Promise<Timed>) =>
      medianOf(opts.runs, async () => {
        const t = await run();
        return { secs: t.secs, rss: t.rssMiB };
      });
    /** Medians over rounds that run every command once each (interleaved: a change in the machine's load or disk hits all alike). */
    const rounds = async <K extends string>(cmds: Record<K, (out: string) => Promise<Timed>>) => {
      const keys = Object.keys(cmds) as K[];
      const m = await medianOf(opts.runs, async () => {
        const r: Record<string, number> = {};
        for (const k of keys) {
          const t = await intoFresh(`export-${k}`, cmds[k]);
          r[`${k}.secs`] = t.secs;
          r[`${k}.rss`] = t.rssMiB;
        }
        return r;
      });
      return Object.fromEntries(keys.map((k) => [k, { secs: m[`${k}.secs`]!, rss: m[`${k}.rss`]! }])) as Record<K, { secs: number; rss: number }>;
    };
    const { exp, expVerify, cp, cpSync, cpVerified } = await rounds({
      exp: (out) => cake(["export", "-q", "hf://bench/model", out], env),
      expVerify: (out) => cake(["export", "-q", "--verify", "hf://bench/model", out], env),
      cp: (out) => timed("cp", ["-r", model.dir, out]),
      cpSync: (out) => timed("sh", ["-c", 'cp -r "$0" "$1" && sync -f "$1"', model.dir, out]),
      // cp with the guarantee cake export --verify gives: every byte written hashed.
      cpVerified: (out) => timed("sh", ["-c", 'cp -r "$0" "$1" && sha256sum "$1"/* > /dev/null', model.dir, out]),
    });

    // The same at a bigger size: the fixed cost of starting node (~0.1 s) weighs less.
    const big = await models.base(opts.mb2);
    await hub.commit("bench/big", big.dir);
    const bigEnv = cakeEnv(hub, await scratch.dir("export-big-store")); // apart: push below measures the first store's blobs
    await cake(["pull", "-q", "hf://bench/big"], bigEnv);
    const { bigExp, bigCp } = await rounds({
      bigExp: (out) => cake(["export", "-q", "hf://bench/big", out], bigEnv),
      bigCp: (out) => timed("cp", ["-r", big.dir, out]),
    });
    const bare = await repeat(() => timed(process.execPath, ["-e", "0"]));
    const version = await repeat(() => cake(["--version"], env));

    const refName = await layoutRefName(store, "hf://bench/model@main");
    const pushOnce = (argsFor: (host: string) => [string, string[]]) =>
      repeat(async () => {
        const reg = await startRegistry();
        try {
          const [cmd, args] = argsFor(reg.host);
          return cmd === "cake" ? await cake(args, env) : await timed(cmd, args);
        } finally {
          await reg.close();
        }
      });
    const push = await pushOnce((host) => ["cake", ["push", "-q", "hf://bench/model", `${host}/bench/model:v1`]]);
    const orasCp = await pushOnce((host) => [oras, ["cp", "--no-tty", "--from-oci-layout", "--to-plain-http", `${store}:${refName}`, `${host}/bench/model:v1`]]);
    const orasCp16 = await pushOnce((host) => [oras, ["cp", "--no-tty", "--concurrency", "16", "--from-oci-layout", "--to-plain-http", `${store}:${refName}`, `${host}/bench/model:v1`]]);
    const du = await run("du", ["-sb", path.join(store, "blobs")]);
    const blobBytes = Number(du.stdout.split(/\s/)[0]);

    return {
      name: "export",
      title: "6. Export and push",
      setup: [
        `${mb(model.bytes)} MB model pulled into a store first; every command reads from a warm page cache; median of ${opts.runs} rounds, each running every copy once (interleaved), each copy after a \`sync\``,
        `push: into a fresh CNCF distribution (filesystem storage, same disk, loopback) per run; ${mb(blobBytes)} MB of blobs`,
      ],
      header: ["command", "seconds", "GB/s", "vs cp -r", "max RSS"],
      rows: [
        ["cake export (files checked at pull: copy + rename)", secs(exp.secs), gbs(model.bytes, exp.secs), pct(cp.secs / exp.secs), mib(exp.rss)],
        ["cake export --verify (sha256 + git oid of every file, rename)", secs(expVerify.secs), gbs(model.bytes, expVerify.secs), pct(cp.secs / expVerify.secs), mib(expVerify.rss)],
        ["cp -r", secs(cp.secs), gbs(model.bytes, cp.secs), "100 %", mib(cp.rss)],
        ["cp -r && sha256sum (the guarantee of --verify)", secs(cpVerified.secs), gbs(model.bytes, cpVerified.secs), pct(cp.secs / cpVerified.secs), mib(cpVerified.rss)],
        ["cp -r && sync (for scale: the bytes on disk)", secs(cpSync.secs), gbs(model.bytes, cpSync.secs), pct(cp.secs / cpSync.secs), mib(cpSync.rss)],
        [`cake export, ${mb(big.bytes)} MB model`, secs(bigExp.secs), gbs(big.bytes, bigExp.secs), pct(bigCp.secs / bigExp.secs), mib(bigExp.rss)],
        [`cp -r, ${mb(big.bytes)} MB model`, secs(bigCp.secs), gbs(big.bytes, bigCp.secs), "100 %", mib(bigCp.rss)],
        ["(fixed cost) cake --version", secs(version.secs), "", "", mib(version.rss)],
        ["(fixed cost) node -e 0", secs(bare.secs), "", "", mib(bare.rss)],
        ["cake push (store -> distribution)", secs(push.secs), gbs(blobBytes, push.secs), "", mib(push.rss)],
        ["oras cp --from-oci-layout (same store, concurrency 3)", secs(orasCp.secs), gbs(blobBytes, orasCp.secs), "", mib(orasCp.rss)],
        ["oras cp --from-oci-layout --concurrency 16", secs(orasCp16.secs), gbs(blobBytes, orasCp16.secs), "", mib(orasCp16.rss)],
      ],
      targets: [
        {
          what: "export >= 70 % of cp",
          measured: `${pct(cp.secs / exp.secs)} of cp -r at ${mb(model.bytes)} MB, ${pct(bigCp.secs / bigExp.secs)} at ${mb(big.bytes)} MB; --verify ${pct(cpVerified.secs / expVerify.secs)} of cp -r && sha256sum`,
          met: cp.secs / exp.secs >= 0.7 && bigCp.secs / bigExp.secs >= 0.7,
        },
      ],
      notes: [
        "cake export copies store blobs that hash to their names and whose rebuilt files the pull matched against the Hub's sha256 (the store records it per manifest), so by default it hashes nothing: whole-file blobs go through the kernel (copy_file_range, as cp), safetensors files are header + blobs through 2 MiB reads and writes (the next piece read while the current one is written), 4 files at a time, each into a temp file renamed when complete. Like cp it does not fsync. `--verify` hashes every file again (sha256, and the git blob oid for files not in LFS), the first export of an artifact the store has not checked (from a registry or an archive) does so too.",
        `Push rate: ${gbs(blobBytes, push.secs)} GB/s for cake, ${gbs(blobBytes, Math.min(orasCp.secs, orasCp16.secs))} GB/s for the faster oras; distribution writes every blob to disk and hashes it too, on the same 2 cores.`,
      ],
    };
  } finally {
    await scratch.cleanup();
  }
}
