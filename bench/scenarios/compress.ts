/**
 * Scenario: the compressed local store (issue 19). On generated trained-like weights (normal, sigma
 * 0.02; random bytes, what the other scenarios hold, do not compress): the stored/raw ratio of a
 * BF16 and an F32 model after `cake compress`, against `zstd -3` of the same files when the zstd CLI
 * is installed; `cake export` from a compressed store against a raw one; `cake pull --compress`
 * against a plain pull on a capped link; warm pulls (cake pull, oras) through `cake proxy` serving
 * from a compressed store against one serving from a raw store.
 *
 *   npm run bench -- compress [--mb 512] [--runs 3] [--bandwidth 40] [--latency 30]
 */
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { startHub } from "../../test/hub/emulator.js";
import { startCakeProxy } from "../lib/cake-proxy.js";
import { writeSafetensorsFile } from "../../test/fixtures/models.js";
import { cakeEnv, type Models, type Options } from "../lib/context.js";
import { ensureOras } from "../lib/peers.js";
import { llamaTensorsOf, repoBytes, shapeForSize } from "../lib/models.js";
import { cake, CAKE, medianOf, run, Scratch, timed } from "../lib/proc.js";
import { mb, mbs, mib, pct, secs, type Section } from "../lib/report.js";

/** A one-file Llama-shaped model of about `bytes`, every tensor trained-like in `dtype` (made once, kept with --models). */
async function trainedModel(models: Models, dtype: "BF16" | "F32", bytes: number): Promise<{ dir: string; bytes: number }> {
  const dir = await models.pathOf(`trained-${dtype}-${Math.round(bytes / 1e6)}mb`);
  const file = path.join(dir, "model.safetensors");
  if (!existsSync(file)) {
    process.stderr.write(`bench: trained-like ${dtype} model ${dir}\n`);
    // The BF16 shape of half the size, in F32, is the size asked for.
    const shape = shapeForSize(dtype === "F32" ? bytes / 2 : bytes);
    await writeSafetensorsFile(`${file}.part`, llamaTensorsOf(shape, dtype).map((t) => ({ ...t, dtype, normal: true })));
    await fs.writeFile(path.join(dir, "config.json"), JSON.stringify({ model_type: "llama", hidden_size: shape.hidden, torch_dtype: dtype === "F32" ? "float32" : "bfloat16" }));
    await fs.rename(`${file}.part`, file);
  }
  return { dir, bytes: await repoBytes(dir) };
}

const lsOf = async (env: NodeJS.ProcessEnv) => JSON.parse((await run(process.execPath, [CAKE, "ls", "--json"], { env })).stdout) as { ref: string; bytes: number; stored: number }[];

export async function compress(models: Models, opts: Options): Promise<Section> {
  const scratch = new Scratch();
  try {
    const bf16 = await trainedModel(models, "BF16", opts.mb * 1e6);
    const f32 = await trainedModel(models, "F32", (opts.mb * 1e6) / 2);
    const hub = await startHub();
    scratch.defer(() => hub.close());
    await hub.commit("bench/bf16", bf16.dir);
    await hub.commit("bench/f32", f32.dir);
    const zstd = existsSync("/usr/bin/zstd") ? "/usr/bin/zstd" : existsSync("/usr/local/bin/zstd") ? "/usr/local/bin/zstd" : undefined;

    // Ratios, and the time `cake compress` takes.
    const rawEnv = cakeEnv(hub, await scratch.dir("compress-raw"));
    const zEnv = cakeEnv(hub, await scratch.dir("compress-z"));
    const ratioRows: (string | number)[][] = [];
    const ratios: Record<string, number> = {};
    for (const [name, m] of [["bf16", bf16], ["f32", f32]] as const) {
      await cake(["pull", "-q", `hf://bench/${name}`], rawEnv);
      await cake(["pull", "-q", `hf://bench/${name}`], zEnv);
      const t = await cake(["compress", "-q", `hf://bench/${name}`], zEnv);
      const l = (await lsOf(zEnv)).find((x) => x.ref === `hf://bench/${name}@main`)!;
      ratios[name] = l.stored / l.bytes;
      ratioRows.push([`cake compress, ${name.toUpperCase()} ${mb(m.bytes)} MB`, pct(l.stored / l.bytes), secs(t.secs), mbs(m.bytes, t.secs), mib(t.rssMiB), secs(t.cpu)]);
      if (zstd) {
        const out = path.join(await scratch.dir("compress-zstd"), "m.zst");
        const z = await timed(zstd, ["-3", "-q", "-T0", "-o", out, path.join(m.dir, "model.safetensors")]);
        ratioRows.push([`zstd -3 -T0, the same model.safetensors`, pct((await fs.stat(out)).size / (await fs.stat(path.join(m.dir, "model.safetensors"))).size), secs(z.secs), mbs(m.bytes, z.secs), mib(z.rssMiB), secs(z.cpu)]);
      }
    }

    // Export: from the raw store and from the compressed one, interleaved; the compressed one also
    // held to one core (taskset), which shows how decoding scales with cores.
    const oneCore = existsSync("/usr/bin/taskset") ? ["/usr/bin/taskset", "-c", "0"] : undefined;
    const exports = [["raw", rawEnv, []], ["z", zEnv, []], ...(oneCore ? [["z1", zEnv, oneCore] as const] : [])] as const;
    const ex = await medianOf(opts.runs, async () => {
      const r: Record<string, number> = {};
      for (const [k, env, pin] of exports) {
        const d = await scratch.dir(`compress-export-${k}`);
        await run("sync", []);
        const args = [CAKE, "export", "-q", "hf://bench/bf16", path.join(d, "out")];
        const t = pin.length ? await timed(pin[0]!, [...pin.slice(1), process.execPath, ...args], { env }) : await timed(process.execPath, args, { env });
        r[k] = t.secs;
        r[`${k}.rss`] = t.rssMiB;
        r[`${k}.cpu`] = t.cpu;
        await fs.rm(d, { recursive: true, force: true });
      }
      return r;
    });

    // Pull on a capped link: plain, and --compress, each into a fresh store. With one connection the
    // link is the cap (40 MB/s: a 320 Mbit/s line), the bottleneck, as the target means; with cake's
    // 16 the link (16 × the cap on loopback) is wider than 2 busy cores can fill, so the pull is
    // bound by the CPU, and there --compress costs what its coding costs.
    hub.setKnobs({ bandwidth: opts.bandwidth * 1e6, latencyMs: opts.latencyMs });
    const pullKinds = [["plain", []], ["z", ["--compress"]], ["plain1", ["-c", "1"]], ["z1", ["-c", "1", "--compress"]]] as const;
    const pulls = await medianOf(opts.runs, async () => {
      const r: Record<string, number> = {};
      for (const [k, args] of pullKinds) {
        const d = await scratch.dir(`compress-pull-${k}`);
        const t = await cake(["pull", "-q", ...args, "hf://bench/bf16"], cakeEnv(hub, d));
        r[k] = t.secs;
        r[`${k}.cpu`] = t.cpu;
        await fs.rm(d, { recursive: true, force: true });
      }
      return r;
    });
    hub.setKnobs({ bandwidth: 0, latencyMs: 0 });

    // Warm pulls through `cake proxy`: one proxy's store compressed, the other's raw, the same model;
    // runs alternate, so a change in the machine's load hits both alike.
    const oras = await ensureOras();
    const proxyRaw = await startCakeProxy(scratch, hub);
    const proxyZ = await startCakeProxy(scratch, hub);
    const proxyRef = (host: string) => `${host}/hf/bench/bf16:main`;
    const clients = [
      { name: "cake pull", pull: (ref: string, dir: string) => cake(["pull", "-q", ref], cakeEnv(undefined, dir)) },
      { name: "oras pull --concurrency 16", pull: (ref: string, dir: string) => timed(oras, ["pull", "--plain-http", "--no-tty", "--concurrency", "16", "-o", path.join(dir, "out"), ref]) },
    ];
    const viaProxy = async (cl: (typeof clients)[number], host: string) => {
      const d = await scratch.dir("compress-proxy-client");
      const t = await cl.pull(proxyRef(host), d);
      await fs.rm(d, { recursive: true, force: true });
      return t;
    };
    for (const p of [proxyRaw, proxyZ]) await viaProxy(clients[0]!, p.host);
    await cake(["compress", "-q"], cakeEnv(hub, proxyZ.home));
    const proxyZBytes = (await lsOf(cakeEnv(hub, proxyZ.home))).reduce((n, l) => n + l.stored, 0);
    const proxyRows: (string | number)[][] = [];
    const proxyShares: Record<string, number> = {};
    for (const cl of clients) {
      const pr = await medianOf(opts.runs, async () => {
        const r: Record<string, number> = {};
        for (const [k, p] of [["raw", proxyRaw], ["z", proxyZ]] as const) r[k] = (await viaProxy(cl, p.host)).secs;
        return r;
      });
      proxyShares[cl.name] = pr.raw! / pr.z!;
      proxyRows.push([`${cl.name} through cake proxy, warm, raw store`, "", secs(pr.raw!), mbs(bf16.bytes, pr.raw!), ""]);
      proxyRows.push([`${cl.name} through cake proxy, warm, compressed store`, pct(pr.raw! / pr.z!), secs(pr.z!), mbs(bf16.bytes, pr.z!), ""]);
    }
    await proxyRaw.stop();
    await proxyZ.stop();

    const exportShare = ex.raw! / ex.z!;
    return {
      name: "compress",
      title: "Compressed local store",
      setup: [
        `generated trained-like weights (normal, sigma 0.02): a BF16 model of ${mb(bf16.bytes)} MB and an F32 one of ${mb(f32.bytes)} MB, one safetensors file each`,
        `export, pull and proxy: median of ${opts.runs} rounds, interleaved; pull from the Hub emulation capped at ${opts.bandwidth} MB/s per connection, ${opts.latencyMs} ms; the proxies fetch from it uncapped`,
      ],
      header: ["what", "stored / raw, or share of the raw store's speed", "seconds", "MB/s", "max RSS", "CPU-s"],
      rows: [
        ...ratioRows,
        ["cake export, BF16, from a raw store", "", secs(ex.raw!), mbs(bf16.bytes, ex.raw!), mib(ex["raw.rss"]!), secs(ex["raw.cpu"]!)],
        ["cake export, BF16, from a compressed store", pct(exportShare), secs(ex.z!), mbs(bf16.bytes, ex.z!), mib(ex["z.rss"]!), secs(ex["z.cpu"]!)],
        ...(ex.z1 ? [["cake export, BF16, from a compressed store, one core (taskset -c 0)", pct(ex.raw! / ex.z1), secs(ex.z1), mbs(bf16.bytes, ex.z1), mib(ex["z1.rss"]!), secs(ex["z1.cpu"]!)]] : []),
        ["cake pull hf:// (capped, 16 connections)", "", secs(pulls.plain!), mbs(bf16.bytes, pulls.plain!), "", secs(pulls["plain.cpu"]!)],
        ["cake pull --compress hf:// (capped, 16 connections)", pct(pulls.plain! / pulls.z!), secs(pulls.z!), mbs(bf16.bytes, pulls.z!), "", secs(pulls["z.cpu"]!)],
        [`cake pull -c 1 hf:// (capped: ${opts.bandwidth} MB/s)`, "", secs(pulls.plain1!), mbs(bf16.bytes, pulls.plain1!), "", secs(pulls["plain1.cpu"]!)],
        [`cake pull -c 1 --compress hf:// (capped: ${opts.bandwidth} MB/s)`, pct(pulls.plain1! / pulls.z1!), secs(pulls.z1!), mbs(bf16.bytes, pulls.z1!), "", secs(pulls["z1.cpu"]!)],
        ...proxyRows,
      ],
      targets: [
        { what: "BF16 stored <= 70 % of raw", measured: pct(ratios.bf16!), met: ratios.bf16! <= 0.7 },
        { what: "F32 stored <= 87 % of raw", measured: pct(ratios.f32!), met: ratios.f32! <= 0.87 },
        { what: "export from a compressed store >= 1/3 of the speed from a raw one", measured: `${pct(exportShare)} of the raw store's speed`, met: exportShare >= 1 / 3 },
        { what: `pull --compress not slower than a plain pull (capped link: ${opts.bandwidth} MB/s, one connection)`, measured: `${secs(pulls.z1!)} s against ${secs(pulls.plain1!)} s`, met: pulls.z1! <= pulls.plain1! * 1.05 },
        ...clients.map((cl) => ({ what: `proxy from a compressed store: warm ${cl.name} >= 60 % of the raw store's rate`, measured: pct(proxyShares[cl.name]!), met: proxyShares[cl.name]! >= 0.6 })),
      ],
      notes: [
        "Each blob is split into byte streams by its dtype (BF16: 2, F32: 4; a pack by the dtype that holds most of its bytes); the streams whose bytes cluster (the exponent byte) are coded with an 11-bit canonical Huffman code, the others stored, in independent 1 MiB frames decoded on worker threads (docs/format.md): one table lookup decodes up to 4 bytes and the streams are joined with SIMD shuffles, in a small WebAssembly module (a 1 MiB BF16 frame: ~0.7 ms, against ~1.9 ms with zlib's inflate of the same size). ZipNN (Hershcovitch et al., 2024) reports ~67 % for BF16 and ~83 % for FP32 models with the same idea.",
        "pull --compress compresses each layer in the background as soon as it has landed and been verified (a few at a time, on the frame workers only: the receiving thread codes nothing), beside its raw file; the raw files go once the model is tagged. Each layer costs ~10 ms of CPU per MiB (coding, then decoding back and hashing before its raw file may go): on a link the cap makes the bottleneck that runs beside the download, where the pull is already bound by the CPU (16 loopback connections on 2 shared cores) it adds to it. CPU-s: user + system time of the cake process.",
        "export, one core: the same export under `taskset -c 0` (one frame worker sharing the core with the main thread); on two cores the frame worker decodes beside the main thread, which reads, checks and writes. More cores than 2 cannot be shown on this machine.",
        `proxy: \`cake proxy\` on a store filled by one pull, then \`cake compress\` (${mb(proxyZBytes)} MB stored), against a second proxy whose store stays raw; each client pulls \`<proxy>/hf/bench/bf16:main\`, median of ${opts.runs} alternating runs.`,
      ],
    };
  } finally {
    await scratch.cleanup();
  }
}
