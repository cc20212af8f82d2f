/**
 * Issue 17, fine-tune dedup straight from the Hub (src/model/speculate.ts): each second pull starts
 * from a store holding only the base, and the Hub emulation's counters give what it cost. Rows: a
 * top-layers fine-tune; the base resharded and re-saved with another `__metadata__` (every offset
 * moves); two stealth fine-tunes the samples should miss (8 rows of the embedding, 4 KiB in the middle
 * of one matrix), exported and compared byte for byte; the fine-tune with an index (cake index push)
 * instead of samples; and what the windows cost on models with Llama-2-7B's and -70B's tensor counts
 * (every tensor changed, so every sample is paid for and none helps), against a pull with speculation
 * off (bench/lib/pull-nospec.ts).
 */
import fs from "node:fs/promises";
import path from "node:path";
import { GUESS_WINDOW } from "../../src/model/speculate.js";
import { startHub, type Hub } from "../../test/hub/emulator.js";
import { hashTree } from "../../test/fixtures/models.js";
import { startRegistry } from "../../test/registry/harness.js";
import { cakeEnv, type Models, type Options } from "../lib/context.js";
import { makeModelOfShape, reshard, type BenchModel, type LlamaShape } from "../lib/models.js";
import { checkRegistry } from "../lib/peers.js";
import { cake, medianOf, ROOT, Scratch, timed, type Timed } from "../lib/proc.js";
import { mb, pct, secs, type Section } from "../lib/report.js";
import { changedUnitBytes, planOfShape, windowsOf } from "../lib/units.js";
import { patchTensor, rewriteMetadata } from "../lib/variants.js";

const UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };
const bytesOf = (s: string) => {
  const [n, u] = s.split(" ");
  return Math.round(Number(n) * (UNITS[u!] ?? NaN));
};

/** The numbers of cake pull's reuse summary line (zeros when it printed none). */
export function parseReuse(stderr: string): { tensors: number; reused: number; matched: number; sampled: number; sampleBytes: number } {
  const m = /: (\d+) tensors \(([\d.]+ \w+)\) taken from the store[^\n]*?: (\d+) of (\d+) sampled blobs matched, checked by ([\d.]+ \w+) of samples/.exec(stderr);
  if (!m) return { tensors: 0, reused: 0, matched: 0, sampled: 0, sampleBytes: 0 };
  return { tensors: Number(m[1]), reused: bytesOf(m[2]!), matched: Number(m[3]), sampled: Number(m[4]), sampleBytes: bytesOf(m[5]!) };
}

/** Lines cake said about a wrong guess or index (its second pass). */
const notices = (stderr: string) => stderr.split("\n").filter((l) => l.startsWith("cake: "));

/**
 * Llama-2-7B's and -70B's tensor counts (291 and 723) and unit layouts at small sizes. 7B: every matrix
 * ~1.2 MB, a unit of its own (226 sampled units, as the real one). 70B: GQA (k, v 1/8 of q) and MLP
 * 2x hidden, so that, as in the real 70B, the 500-layer cap (src/format/plan.ts) packs each layer's
 * attention with its norms: 3 MLP units + 1 pack per layer (~320 units, not ~700).
 */
const COUNTED: Record<string, { shape: LlamaShape; real: LlamaShape; shards: number }> = {
  "7B": {
    shape: { hidden: 768, intermediate: 768, layers: 32, heads: 12, kvHeads: 12, vocab: 4096 },
    real: { hidden: 4096, intermediate: 11008, layers: 32, heads: 32, kvHeads: 32, vocab: 32000 },
    shards: 2,
  },
  "70B": {
    shape: { hidden: 512, intermediate: 1024, layers: 80, heads: 8, kvHeads: 1, vocab: 4096 },
    real: { hidden: 8192, intermediate: 28672, layers: 80, heads: 64, kvHeads: 8, vocab: 32000 },
    shards: 15,
  },
};

export async function hubDedup(models: Models, opts: Options): Promise<Section> {
  checkRegistry();
  const scratch = new Scratch();
  const rows: (string | number)[][] = [];
  const costRows: (string | number)[][] = [];
  const targets: Section["targets"] = [];
  const notes: string[] = [];
  try {
    const hub = await startHub({ bandwidth: opts.bandwidth * 1e6, latencyMs: opts.latencyMs });
    scratch.defer(() => hub.close());
    const reg = await startRegistry();
    scratch.defer(() => reg.close());
    const sizes = [opts.mb, ...(opts.mb2 > 0 ? [opts.mb2] : [])];
    for (const size of sizes) await modelRows(models, opts, size, size === opts.mb, hub, reg.host, scratch, rows, targets, notes);
    for (const label of Object.keys(COUNTED)) await windowCost(models, opts.runs, hub, scratch, label, costRows);

    return {
      name: "hubdedup",
      title: "17. Fine-tune dedup from the Hub (samples, index)",
      setup: [
        `Hub emulation capped at ${opts.bandwidth} MB/s per connection, ${opts.latencyMs} ms per request; each row starts from a store holding only the base (pulled before, not counted) and counts what the Hub served for the second pull (file bytes, samples included; requests include API calls)`,
        `models: Llama-shaped BF16 (bench/lib/models.ts); the fine-tune changes every tensor of the top ${opts.ftLayers} layers; median of ${opts.runs} run(s)`,
      ],
      header: ["model", "second pull", "Hub MB", "changed tensors MB", "changed units MB", "(Hub − changed tensors) of the model", "of it on files the base has, KiB", "samples KiB", "blobs matched / sampled", "seconds", "export = files"],
      rows,
      targets,
      notes: [
        ...notes,
        "Hub bytes include the samples and, on files the fine-tune shares byte for byte with the base, the reuse proofs (src/model/reuse-proof.ts: windows read from this repo's CDN that prove it serves the bytes the store has under another repo) and header reads.",
        [
          `**What the windows cost** (every tensor of the second model changed, same names and shapes: every unit is sampled and none matches, so the difference from a pull with speculation off, bench/lib/pull-nospec.ts, into a copy of the same store, is the windows alone). A real 70B has 723 tensors, but the 500-layer cap (src/format/plan.ts) packs each layer's attention with its norms, so it has ~320 sampled units, not ~700; a pack is sampled in every tensor, hence more windows per unit. The windows are read before the pull fetches a tensor, 16 at a time, so they add about windows / 16 round trips (${opts.latencyMs} ms each here):`,
          "",
          "| tensor counts of | MB | tensors | units sampled | windows (computed) | extra requests | their KiB | seconds, speculation on | off | added | the real model: units sampled, windows, MiB (computed) |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
          ...costRows.map((r) => `| ${r.join(" | ")} |`),
        ].join("\n"),
      ],
    };
  } finally {
    await scratch.cleanup();
  }
}

interface Second {
  secs: number;
  bytes: number;
  requests: number;
  sampleBytes: number;
  matched: number;
  sampled: number;
  /** Bytes served from files the base has byte for byte (the reuse proofs' windows, headers). */
  onSame: number;
}

/**
 * Per run: a copy of `template` (a store with the base), counters reset, `pull`; then `after` on that
 * store. `same`: the Hub's keys (org/name/path) of the files the base has byte for byte.
 */
async function secondPull(
  runs: number,
  hub: Hub,
  scratch: Scratch,
  template: string,
  same: Set<string>,
  pull: (store: string) => Promise<Timed>,
  after?: (store: string, t: Timed) => Promise<void>,
): Promise<Second & { stderr: string }> {
  let stderr = "";
  const m = await medianOf(runs, async () => {
    const d = await scratch.dir("hubdedup");
    await timed("cp", ["-a", `${template}/.`, d]);
    hub.counters.reset();
    const t = await pull(d);
    let onSame = 0;
    for (const [k, n] of hub.counters.bytesByFile) if (same.has(k)) onSame += n;
    const r = { secs: t.secs, bytes: hub.counters.bytesServed, requests: hub.counters.requests, onSame };
    stderr = t.stderr;
    const p = parseReuse(t.stderr);
    if (after) await after(d, t);
    await fs.rm(d, { recursive: true, force: true });
    return { ...r, sampleBytes: p.sampleBytes, matched: p.matched, sampled: p.sampled };
  });
  return { ...m, stderr };
}

async function modelRows(
  models: Models,
  opts: Options,
  size: number,
  all: boolean,
  hub: Hub,
  registry: string,
  scratch: Scratch,
  rows: (string | number)[][],
  targets: Section["targets"],
  notes: string[],
): Promise<void> {
  const base: BenchModel = await models.base(size);
  const ft = await models.fineTune(size);
  const label = `${mb(base.bytes)} MB`;
  const org = `bench${size}`;
  await hub.commit(`${org}/base`, base.dir);
  await hub.commit(`${org}/ft`, ft.dir);
  const template = await scratch.dir("hubdedup-base");
  await cake(["pull", "-q", `hf://${org}/base`], cakeEnv(hub, template));
  const baseHashes = await hashTree(base.dir);
  const measure = async (repo: string, dir: string, extra: string[] = [], after?: (store: string) => Promise<void>) => {
    const same = new Set([...(await hashTree(dir))].filter(([f, h]) => baseHashes.get(f) === h).map(([f]) => `${org}/${repo}/${f}`));
    return secondPull(opts.runs, hub, scratch, template, same, (store) => cake(["pull", `hf://${org}/${repo}`, ...extra], cakeEnv(hub, store)), after);
  };
  const row = (what: string, s: Second & { stderr: string }, changed: number, units: number, exported = "") => {
    const said = notices(s.stderr);
    if (said.length && !exported) notes.push(`${label}, ${what}: cake said \`${said.join(" / ")}\`.`);
    rows.push([label, what, mb(s.bytes), mb(changed), mb(units), pct(Math.max(0, s.bytes - changed) / base.bytes), (s.onSame / 1024).toFixed(0), (s.sampleBytes / 1024).toFixed(0), `${s.matched} / ${s.sampled}`, secs(s.secs), exported]);
  };

  // 1. the top-layers fine-tune; its store is kept to publish the fine-tune's index from.
  const withFt = await scratch.dir("hubdedup-ft");
  const s1 = await measure("ft", ft.dir, [], (d) => timed("cp", ["-a", `${d}/.`, withFt]).then(() => undefined));
  const ftUnits = await changedUnitBytes(base.dir, ft.dir);
  row(`top-${opts.ftLayers}-layer fine-tune (${ft.changedTensors} tensors changed)`, s1, ft.changedBytes, ftUnits);
  targets.push({ what: `${label}: fine-tune from the Hub moves <= changed + 2 % of the model`, measured: `${mb(s1.bytes)} MB for ${mb(ft.changedBytes)} MB changed`, met: s1.bytes <= ft.changedBytes + 0.02 * base.bytes });
  if (!all) return;

  // 2. the same weights in 4 shards, and with another __metadata__ in every header.
  const rs = await reshard(base.dir, `${base.dir}-reshard4`, 4);
  const meta = await rewriteMetadata(base.dir, `${base.dir}-meta`, { saved_by: "cake bench: a re-save that changed only the header metadata" });
  await hub.commit(`${org}/reshard4`, rs);
  await hub.commit(`${org}/meta`, meta);
  for (const [repo, dir, what] of [["reshard4", rs, "the base resharded into 4 files"], ["meta", meta, "the base, each header's __metadata__ rewritten"]] as const) {
    const s = await measure(repo, dir);
    row(what, s, 0, 0);
    targets.push({ what: `${label}: ${what}: <= 2 % of the model`, measured: `${mb(s.bytes)} MB (${pct(s.bytes / base.bytes)})`, met: s.bytes <= 0.02 * base.bytes });
  }

  // 3. stealth fine-tunes: exported and compared with the Hub's files byte for byte.
  const rowBytes = base.shape.hidden * 2;
  const stealth = [
    { repo: "embed8", what: "8 rows of the embedding changed", name: "model.embed_tokens.weight", at: 12345 * rowBytes, len: 8 * rowBytes },
    { repo: "mid4k", what: "4 KiB in the middle of one matrix changed", name: `model.layers.${base.shape.layers >> 1}.mlp.gate_proj.weight`, at: -1, len: 4096 },
  ];
  for (const v of stealth) {
    const dir = `${base.dir}-${v.repo}`;
    const hit = await patchTensor(base.dir, dir, v.name, v.at, v.len);
    await hub.commit(`${org}/${v.repo}`, dir);
    let same = "";
    const s = await measure(v.repo, dir, [], async (store) => {
      const out = await scratch.dir("hubdedup-export");
      await cake(["export", "-q", `hf://${org}/${v.repo}`, path.join(out, "m")], cakeEnv(hub, store));
      same = (await sameFiles(dir, path.join(out, "m"))) ? "identical" : "**differs**";
      await fs.rm(out, { recursive: true, force: true });
    });
    const units = await changedUnitBytes(base.dir, dir);
    row(v.what, s, v.len, units, same);
    targets.push({ what: `${label}: ${v.what}: export byte-identical`, measured: same, met: same === "identical" });
    const said = notices(s.stderr);
    notes.push(
      `${label}, ${v.what} (bytes ${hit.begin}-${hit.end} of ${hit.file}): ${mb(s.bytes)} MB from the Hub for ${v.len} changed bytes. ` +
        (said.length
          ? `The samples missed the change, the file's sha256 refuted the guess (\`${said.join(" / ")}\`), and the second pass fetched every unit guessed in that file, where the unit that differs is ${mb(units)} MB: the refetch costs the file, not the unit (the Hub's only hash is the file's). "blobs matched / sampled" is the second pass's count.`
          : "cake said nothing of a wrong guess: the samples caught the change."),
    );
  }

  // 4. the fine-tune with an index instead of samples.
  const pushed = await cake(["index", "push", `hf://${org}/ft`, `${registry}/index`], cakeEnv(hub, withFt));
  const indexBytes = Number(/pushed \((\d+) bytes\)/.exec(pushed.stderr)?.[1] ?? NaN);
  const s4 = await measure("ft", ft.dir, ["--index", `${registry}/index`]);
  row(`top-${opts.ftLayers}-layer fine-tune with --index (index ${(indexBytes / 1024).toFixed(0)} KiB)`, s4, ft.changedBytes, ftUnits);
  targets.push({ what: `${label}: fine-tune with --index: Hub bytes <= changed + index size`, measured: `${s4.bytes} B for ${ft.changedBytes} B changed + ${indexBytes} B index (${Math.abs(s4.bytes - ft.changedBytes - indexBytes)} B ${s4.bytes > ft.changedBytes + indexBytes ? "over" : "under"}); ${s4.onSame} B on files the base has`, met: s4.bytes <= ft.changedBytes + indexBytes });
  notes.push(`${label}, --index: no samples, but the reuse proofs stay (${(s4.onSame / 1024).toFixed(0)} KiB on files the base has); without them the pull moves ${s4.bytes - s4.onSame} B, within changed + index (${ft.changedBytes + indexBytes} B).`);
}

async function sameFiles(a: string, b: string): Promise<boolean> {
  const [ha, hb] = await Promise.all([hashTree(a), hashTree(b)]);
  return ha.size === hb.size && [...ha].every(([f, h]) => hb.get(f) === h);
}

/** Windows' cost on a model with every tensor changed: speculation on vs off, from copies of one store; medians. */
async function windowCost(models: Models, runs: number, hub: Hub, scratch: Scratch, label: string, out: (string | number)[][]): Promise<void> {
  const { shape, real, shards } = COUNTED[label]!;
  const base = await makeModelOfShape(await models.pathOf(`counts-${label}-base`), shape, shards, "base");
  const other = await makeModelOfShape(await models.pathOf(`counts-${label}-all-changed`), shape, shards, "all-changed");
  await hub.commit(`counts${label}/base`, base.dir);
  await hub.commit(`counts${label}/all`, other.dir);
  const template = await scratch.dir("hubdedup-counts");
  await cake(["pull", "-q", `hf://counts${label}/base`], cakeEnv(hub, template));
  let stderr = "";
  const m = await medianOf(runs, async () => {
    const [on, off] = [await scratch.dir("hubdedup-on"), await scratch.dir("hubdedup-off")];
    for (const d of [on, off]) await timed("cp", ["-a", `${template}/.`, d]);
    hub.counters.reset();
    const tOn = await cake(["pull", `hf://counts${label}/all`], cakeEnv(hub, on));
    const cOn = { bytes: hub.counters.bytesServed, requests: hub.counters.requests };
    hub.counters.reset();
    const tOff = await timed(process.execPath, [path.join(ROOT, "dist/bench/lib/pull-nospec.js"), `hf://counts${label}/all`], { env: cakeEnv(hub, off) });
    stderr = tOn.stderr;
    await Promise.all([fs.rm(on, { recursive: true, force: true }), fs.rm(off, { recursive: true, force: true })]);
    return { on: tOn.secs, off: tOff.secs, added: tOn.secs - tOff.secs, requests: cOn.requests - hub.counters.requests, bytes: cOn.bytes - hub.counters.bytesServed };
  });
  const p = parseReuse(stderr);
  const small = windowsOf(planOfShape(shape, shards));
  const big = windowsOf(planOfShape(real, shards));
  out.push([
    label,
    mb(base.bytes),
    base.tensors,
    p.sampled,
    small.windows,
    m.requests,
    (m.bytes / 1024).toFixed(0),
    secs(m.on),
    secs(m.off),
    secs(m.added),
    `${big.units}, ${big.windows}, ${((big.windows * GUESS_WINDOW) / 2 ** 20).toFixed(1)}`,
  ]);
}
