/**
 * Scenario 7: peak memory (max RSS) of each cake command at two model sizes (default 512 MB and
 * 2 GB; --mb2 13500 for the 7B shape). It must not grow with the model: cake streams everything.
 * Hub and registry uncapped on loopback (the fastest case holds the most bytes in flight).
 */
import fs from "node:fs/promises";
import path from "node:path";
import { startHub } from "../../test/hub/emulator.js";
import { startRegistry } from "../../test/registry/harness.js";
import { cakeEnv, type Models, type Options } from "../lib/context.js";
import { checkRegistry } from "../lib/peers.js";
import { cake, median, Scratch, type Timed } from "../lib/proc.js";
import { mb, mbs, mib, type Section } from "../lib/report.js";

const LIMIT_MIB = 300;

export async function rss(models: Models, opts: Options): Promise<Section> {
  checkRegistry();
  const sizes = [opts.mb, opts.mb2];
  const commands = ["pull hf://", "export", "push (store -> registry)", "pull (registry)", "pull hf:// (up to date)"];
  const peak = new Map<string, number[]>(commands.map((c) => [c, []]));
  const wall = new Map<string, number[]>(commands.map((c) => [c, []]));
  const bytes: number[] = [];
  const labels: string[] = [];
  const scratch = new Scratch();
  try {
    for (const size of sizes) {
      const model = await models.base(size);
      labels.push(`${mb(model.bytes)} MB (${model.shape.hidden}×${model.shape.layers}, ${model.tensors} tensors)`);
      const hub = await startHub();
      const reg = await startRegistry();
      try {
        await hub.commit("bench/model", model.dir);
        const max: Record<string, number> = {};
        const times: Record<string, number[]> = {};
        const note = (c: string, t: Timed) => {
          max[c] = Math.max(max[c] ?? 0, t.rssMiB);
          (times[c] ??= []).push(t.secs);
        };
        for (let i = 0; i < opts.runs; i++) {
          const store = await scratch.dir("rss-store");
          const env = cakeEnv(hub, store);
          note(commands[0]!, await cake(["pull", "-q", "hf://bench/model"], env));
          note(commands[4]!, await cake(["pull", "-q", "hf://bench/model"], env));
          const out = await scratch.dir("rss-out");
          note(commands[1]!, await cake(["export", "-q", "hf://bench/model", path.join(out, "m")], env));
          await fs.rm(out, { recursive: true, force: true });
          note(commands[2]!, await cake(["push", "-q", "hf://bench/model", `${reg.host}/bench/m${i}:v1`], env));
          await fs.rm(store, { recursive: true, force: true }); // at 13.5 GB, disk space counts
          const store2 = await scratch.dir("rss-store2");
          note(commands[3]!, await cake(["pull", "-q", `${reg.host}/bench/m${i}:v1`], cakeEnv(undefined, store2)));
          await fs.rm(store2, { recursive: true, force: true });
        }
        for (const c of commands) {
          peak.get(c)!.push(max[c]!);
          wall.get(c)!.push(median(times[c]!));
        }
        bytes.push(model.bytes);
      } finally {
        await hub.close();
        await reg.close();
      }
    }
    const rows = commands.map((c) => {
      const v = peak.get(c)!;
      const w = wall.get(c)!;
      const cell = (i: number) => `${mib(v[i]!)} (${w[i]!.toFixed(1)} s${c.includes("up to date") ? "" : `, ${mbs(bytes[i]!, w[i]!)} MB/s`})`;
      return [`cake ${c}`, cell(0), cell(1), `${v[1]! >= v[0]! ? "+" : ""}${(v[1]! - v[0]!).toFixed(0)} MiB`];
    });
    const worst = Math.max(...[...peak.values()].flat());
    const growth = Math.max(...[...peak.values()].map((v) => v[1]! - v[0]!));
    // A 7B-shaped run (--mb2 13500) is manual and slow: it keeps its own section beside the default one.
    const big = opts.mb2 >= 10_000;
    return {
      name: big ? "rss-7b" : "rss",
      title: big ? "7b. Peak memory per command, up to the 7B shape (manual run)" : "7. Peak memory per command",
      setup: [
        `max RSS (/usr/bin/time %M) of each command, the highest of ${opts.runs} runs, at two model sizes, with the median wall time and rate; Hub emulation and distribution uncapped on loopback`,
        "push goes to a new repository each run (no cross-repo mounts: every blob is uploaded)",
      ],
      header: ["command", ...labels, "growth"],
      rows,
      targets: [
        { what: `peak RSS under ${LIMIT_MIB} MB whatever the model size`, measured: `worst ${mib(worst)}; largest growth between sizes ${growth.toFixed(0)} MiB`, met: worst < LIMIT_MIB },
      ],
      notes: [],
    };
  } finally {
    await scratch.cleanup();
  }
}
