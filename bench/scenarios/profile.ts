/**
 * Profile of the hot paths: each cake command once under `node --cpu-prof` (top self-time functions,
 * and the share of time idle, in GC and in native code), and once under `strace -f` (how many read and
 * write system calls, and their average size). Hub emulation and distribution uncapped on loopback, so
 * the client's own costs show.
 */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { startHub } from "../../test/hub/emulator.js";
import { startRegistry } from "../../test/registry/harness.js";
import { cakeEnv, type Models, type Options } from "../lib/context.js";
import { checkRegistry } from "../lib/peers.js";
import { CAKE, medianOf, run, Scratch, timed } from "../lib/proc.js";
import { mb, pct, secs, type Section } from "../lib/report.js";

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

const TOP = 8;

/** Self time per function (name, file:line), summed over samples; the top `TOP` and the total. */
export function summarise(p: CpuProfile): { total: number; top: { fn: string; ms: number }[]; share: Record<string, number> } {
  const byId = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  const self = new Map<string, number>();
  const share: Record<string, number> = { idle: 0, gc: 0, program: 0 };
  let total = 0;
  p.samples.forEach((id, i) => {
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
    total += dt;
    const cf = byId.get(id)!;
    if (cf.functionName === "(idle)") share.idle! += dt;
    else if (cf.functionName === "(garbage collector)") share.gc! += dt;
    else if (cf.functionName === "(program)") share.program! += dt;
    const file = cf.url.replace(/^file:\/\/.*\/(dist|node_modules)\//, "$1/").replace(/^node:/, "node:");
    const key = `${cf.functionName || "(anonymous)"} ${file ? `${file}:${cf.lineNumber + 1}` : ""}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
  });
  const top = [...self].filter(([k]) => !k.startsWith("(idle)")).sort((a, b) => b[1] - a[1]).slice(0, TOP).map(([fn, ms]) => ({ fn, ms }));
  return { total, top, share };
}

/** sha256 throughput of this process on one core, bytes/s (1 MiB updates, as cake hashes). */
function sha256Rate(): number {
  const buf = Buffer.alloc(1 << 20, 7);
  const h = createHash("sha256");
  const t0 = performance.now();
  for (let i = 0; i < 256; i++) h.update(buf);
  h.digest();
  return (256 << 20) / ((performance.now() - t0) / 1000);
}

/** Counts, bytes and time of read/write/fsync system calls in an `strace -f -T` log. */
export function syscalls(log: string): Record<string, { calls: number; bytes: number; secs: number }> {
  const out: Record<string, { calls: number; bytes: number; secs: number }> = {};
  const calls = "read|pread64|readv|preadv|preadv2|write|pwrite64|writev|pwritev|pwritev2|fsync|fdatasync";
  const whole = new RegExp(`^\\d+\\s+(${calls})\\(\\d+.*\\)\\s+=\\s+(\\d+)(?:\\s+<([\\d.]+)>)?$`);
  // A call another thread interrupted ends on a later line: "<... pwrite64 resumed>…) = N <t>".
  const resumed = new RegExp(`^\\d+\\s+<\\.\\.\\. (${calls}) resumed>.*\\)\\s+=\\s+(\\d+)(?:\\s+<([\\d.]+)>)?$`);
  for (const line of log.split("\n")) {
    const m = whole.exec(line) ?? resumed.exec(line);
    if (!m) continue;
    const s = (out[m[1]!] ??= { calls: 0, bytes: 0, secs: 0 });
    s.calls++;
    if (!m[1]!.includes("sync")) s.bytes += Number(m[2]);
    s.secs += Number(m[3] ?? 0);
  }
  return out;
}

export async function profile(models: Models, opts: Options): Promise<Section> {
  checkRegistry();
  const model = await models.base();
  const scratch = new Scratch();
  const rows: (string | number)[][] = [];
  const ioRows: string[] = [];
  try {
    const hub = await startHub();
    scratch.defer(() => hub.close());
    await hub.commit("bench/model", model.dir);
    const store = await scratch.dir("prof-store");
    const outRoot = await scratch.dir("prof-out");
    const commands: { name: string; args: (i: number, reg: string) => string[]; fresh?: boolean; registry?: "push" | "pull" }[] = [
      { name: "pull hf://", args: () => ["pull", "-q", "hf://bench/model"], fresh: true },
      { name: "export", args: (i) => ["export", "-q", "hf://bench/model", path.join(outRoot, `out-${i}`)] },
      { name: "push", args: (_i, reg) => ["push", "-q", "hf://bench/model", `${reg}/bench/model:v1`], registry: "push" },
      { name: "pull (registry)", args: (_i, reg) => ["pull", "-q", `${reg}/bench/model:v1`], fresh: true, registry: "pull" },
    ];
    // A store with the model in it, for export and push.
    const r0 = await run(process.execPath, [CAKE, "pull", "-q", "hf://bench/model"], { env: cakeEnv(hub, store) });
    if (r0.code !== 0) throw new Error(r0.stderr);
    let n = 0;
    for (const c of commands) {
      for (const mode of ["cpu", "strace"] as const) {
        const i = n++;
        const home = c.fresh ? await scratch.dir("prof-fresh") : store;
        // Each registry command gets an empty registry: a push uploads everything, a pull fetches everything.
        const reg = c.registry ? await startRegistry() : undefined;
        if (c.registry === "pull") {
          const r = await run(process.execPath, [CAKE, "push", "-q", "hf://bench/model", `${reg!.host}/bench/model:v1`], { env: cakeEnv(hub, store) });
          if (r.code !== 0) throw new Error(r.stderr);
        }
        const profDir = await scratch.dir("prof");
        const args = c.args(i, reg?.host ?? "");
        const node = mode === "cpu" ? [process.execPath, ["--cpu-prof", "--cpu-prof-dir", profDir, CAKE, ...args]] : ["strace", ["-f", "-qq", "-e", "trace=read,pread64,readv,preadv,preadv2,write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync", "-T", "-e", "signal=none", "-s", "0", "-o", path.join(profDir, "strace.log"), process.execPath, CAKE, ...args]];
        const r = await run(node[0] as string, node[1] as string[], { env: cakeEnv(hub, home) });
        if (r.code !== 0) throw new Error(`cake ${args.join(" ")}: ${r.stderr.slice(-800)}`);
        if (mode === "cpu") {
          const file = (await fs.readdir(profDir)).find((f) => f.endsWith(".cpuprofile"));
          if (!file) throw new Error(`no .cpuprofile from cake ${c.name}`);
          const s = summarise(JSON.parse(await fs.readFile(path.join(profDir, file), "utf8")) as CpuProfile);
          rows.push([`**cake ${c.name}**`, `${(s.total / 1000).toFixed(2)} s`, `idle ${pct(s.share.idle! / s.total)}, GC ${pct(s.share.gc! / s.total)}, (program) ${pct(s.share.program! / s.total)}`]);
          for (const t of s.top) rows.push(["", `${t.ms.toFixed(0)} ms (${pct(t.ms / s.total)})`, `\`${t.fn}\``]);
        } else {
          const sc = syscalls(await fs.readFile(path.join(profDir, "strace.log"), "utf8"));
          const parts = Object.entries(sc)
            .filter(([k, v]) => v.bytes > 1e6 || (k.includes("sync") && v.calls > 0))
            .map(([k, v]) =>
              k.includes("sync")
                ? `${k} ${v.calls} calls, ${v.secs.toFixed(2)} s in the call (summed over threads)`
                : `${k} ${v.calls} calls, ${mb(v.bytes)} MB, avg ${(v.bytes / v.calls / 1024).toFixed(0)} KiB`,
            );
          ioRows.push(`- cake ${c.name}: ${parts.join("; ")}`);
        }
        await reg?.close();
        if (c.fresh) await fs.rm(home, { recursive: true, force: true });
        await fs.rm(path.join(outRoot, `out-${i}`), { recursive: true, force: true });
      }
    }
    // What the fsyncs cost: the same commands with fsync/fdatasync turned into no-ops (LD_PRELOAD).
    const shimDir = await scratch.dir("nofsync");
    await fs.writeFile(path.join(shimDir, "nofsync.c"), "int fsync(int fd) { (void)fd; return 0; }\nint fdatasync(int fd) { (void)fd; return 0; }\n");
    const cc = await run("cc", ["-shared", "-fPIC", "-O2", "-o", path.join(shimDir, "nofsync.so"), path.join(shimDir, "nofsync.c")]);
    const whatIf: string[] = [];
    if (cc.code !== 0) whatIf.push(`- (no C compiler: the fsync what-if was skipped: ${cc.stderr.trim().slice(0, 200)})`);
    else {
      const reg = await startRegistry();
      scratch.defer(() => reg.close());
      const r = await run(process.execPath, [CAKE, "push", "-q", "hf://bench/model", `${reg.host}/bench/model:v1`], { env: cakeEnv(hub, store) });
      if (r.code !== 0) throw new Error(r.stderr);
      const cases: { name: string; args: (out: string) => string[]; fresh: boolean }[] = [
        { name: "pull hf://", args: () => ["pull", "-q", "hf://bench/model"], fresh: true },
        { name: "pull (registry)", args: () => ["pull", "-q", `${reg.host}/bench/model:v1`], fresh: true },
        { name: "export", args: (out) => ["export", "-q", "hf://bench/model", out], fresh: false },
      ];
      for (const c of cases) {
        const once = async (preload: boolean) => {
          const home = c.fresh ? await scratch.dir("prof-fresh") : store;
          const out = await scratch.dir("prof-out");
          const env = { ...cakeEnv(hub, home), ...(preload ? { LD_PRELOAD: path.join(shimDir, "nofsync.so") } : {}) };
          const t = await timed(process.execPath, [CAKE, ...c.args(path.join(out, "m"))], { env });
          if (c.fresh) await fs.rm(home, { recursive: true, force: true });
          await fs.rm(out, { recursive: true, force: true });
          return t.secs;
        };
        // Alternate the two so that a change in the machine's load hits both alike.
        const m = await medianOf(opts.runs, async () => ({ withSync: await once(false), without: await once(true) }));
        const { withSync, without } = m;
        whatIf.push(`- cake ${c.name}: ${secs(withSync)} s as is, ${secs(without)} s with fsync a no-op (${pct(Math.max(0, 1 - without / withSync))} of the wall time is fsync; runs as is ${m.samples.map((x) => secs(x.withSync)).join(", ")}, without ${m.samples.map((x) => secs(x.without)).join(", ")})`);
      }
    }

    return {
      name: "profile",
      title: "Profile of the hot paths",
      setup: [
        `${mb(model.bytes)} MB model, Hub emulation and distribution uncapped on loopback; one run of each command under \`node --cpu-prof\` and one under \`strace -f\``,
        "self time per function (native work such as sha256 and fs calls is charged to the JS function that called it)",
      ],
      header: ["command / function", "self time", "where"],
      rows,
      targets: [],
      notes: [
        `sha256 in Node on this CPU: ${(sha256Rate() / 1e9).toFixed(2)} GB/s on one core, so each pass over the model costs ${((model.bytes / sha256Rate()) * 1000).toFixed(0)} ms of CPU.`,
        "System calls moving more than 1 MB (count, bytes, average size), and fsync (count, seconds spent in the call summed over libuv's threads):",
        ioRows.join("\n"),
        `What fsync costs on this disk (median of ${opts.runs} runs, fsync and fdatasync made no-ops with LD_PRELOAD; for measurement only):`,
        whatIf.join("\n"),
      ],
    };
  } finally {
    await scratch.cleanup();
  }
}
