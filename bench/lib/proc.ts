/**
 * Child processes for the benchmarks: every client (cake, huggingface_hub, oras, crane, cp) runs as its
 * own process under `/usr/bin/time`, so wall time and peak memory (max RSS) are the kernel's, and the
 * servers (Hub emulation, counting proxy) keep running in the bench's own event loop meanwhile.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (dist/bench/lib/ -> ../../..). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const CAKE = path.join(ROOT, "bin", "cake");

export interface Timed {
  secs: number;
  rssMiB: number;
  /** CPU seconds, user + system, of the command and its children. */
  cpu: number;
  stdout: string;
  /** The last 20,000 characters of stderr (summary lines). */
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

let seq = 0;

/** Runs `cmd args` under `/usr/bin/time -f "%e %M %U %S"`; rejects with the tail of stderr on a non-zero exit. */
export async function timed(cmd: string, args: string[], opts: RunOptions = {}): Promise<Timed> {
  const out = path.join(os.tmpdir(), `cake-bench-time-${process.pid}-${seq++}`);
  try {
    const { code, stdout, stderr } = await run("/usr/bin/time", ["-o", out, "-f", "%e %M %U %S", cmd, ...args], opts);
    if (code !== 0) throw new Error(`${path.basename(cmd)} ${args.slice(0, 3).join(" ")} exited ${code}: ${stderr.slice(-800)}`);
    const m = /([\d.]+) (\d+) ([\d.]+) ([\d.]+)\s*$/.exec(await fs.readFile(out, "utf8"));
    if (!m) throw new Error(`/usr/bin/time wrote nothing usable for ${cmd}`);
    return { secs: Number(m[1]), rssMiB: Number(m[2]) / 1024, cpu: Number(m[3]) + Number(m[4]), stdout, stderr };
  } finally {
    await fs.rm(out, { force: true });
  }
}

/** Runs a command to completion, collecting its output (never blocks this process's event loop). */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-20_000)));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Starts a long-running child (a server, or a client to kill mid-way); `tail()` is the end of its stderr. */
export function start(cmd: string, args: string[], opts: RunOptions = {}): ChildProcess & { tail(): string } {
  const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => (err = (err + d).slice(-4000)));
  return Object.assign(child, { tail: () => err });
}

/** `cake <args>` as a child, timed. */
export const cake = (args: string[], env: NodeJS.ProcessEnv) => timed(process.execPath, [CAKE, ...args], { env });

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Runs `once` `runs` times; the median of each numeric field. */
export async function medianOf<T extends Record<string, number>>(runs: number, once: (i: number) => Promise<T>): Promise<T & { samples: T[] }> {
  const samples: T[] = [];
  for (let i = 0; i < runs; i++) samples.push(await once(i));
  const out: Record<string, number> = {};
  for (const k of Object.keys(samples[0]!)) out[k] = median(samples.map((s) => s[k]!));
  return { ...(out as T), samples };
}

/** A fresh temp dir, removed by `cleanup()` (every scenario removes what it made, also on failure). */
export class Scratch {
  private dirs: string[] = [];
  private closers: (() => Promise<unknown>)[] = [];

  async dir(prefix: string): Promise<string> {
    const d = await fs.mkdtemp(path.join(os.tmpdir(), `cake-bench-${prefix}-`));
    this.dirs.push(d);
    return d;
  }

  /** Closes a server (or kills a child) at cleanup, newest first. */
  defer(close: () => Promise<unknown>): void {
    this.closers.push(close);
  }

  async cleanup(): Promise<void> {
    for (const c of this.closers.reverse()) await c().catch(() => {});
    this.closers = [];
    for (const d of this.dirs) await fs.rm(d, { recursive: true, force: true });
    this.dirs = [];
  }
}

/** Total bytes of the files under `dir` (recursively, following nothing). */
export async function treeBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) n += await treeBytes(p);
    else if (e.isFile()) n += (await fs.stat(p)).size;
  }
  return n;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
