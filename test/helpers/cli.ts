/** Runs the built CLI (./bin/cake) as a user would: a child process, its exit code and output. */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";

/** The repository: two folders up from test/helpers, three from dist/test/helpers (the bench imports the built copy). */
const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, path.basename(path.resolve(HERE, "../..")) === "dist" ? "../../.." : "../..");
export const CAKE = path.join(ROOT, "bin", "cake");

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function spawnCake(args: string[], env: Record<string, string | undefined>): ChildProcess {
  return spawn(process.execPath, [CAKE, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
}

export function cake(args: string[], env: Record<string, string | undefined>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawnCake(args, env);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs cake, expects success with nothing on stderr; its stdout, trimmed. */
export async function cakeOk(args: string[], env: Record<string, string | undefined>): Promise<string> {
  const r = await cake(args, env);
  expect(r.stderr, args.join(" ")).toBe("");
  expect(r.code, args.join(" ")).toBe(0);
  return r.stdout.trim();
}

export async function waitFor(cond: () => boolean, timeoutMs = 60_000, what = "condition"): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
