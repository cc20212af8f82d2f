/**
 * What a scenario reports: a markdown section (a table, the targets it checks with met / missed, notes),
 * printed to stdout and written into docs/benchmarks.md between `<!-- bench:NAME -->` and
 * `<!-- /bench:NAME -->`, so a re-run replaces its own section and leaves the prose around it alone.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ROOT, run } from "./proc.js";

export interface Target {
  what: string;
  measured: string;
  met: boolean;
}

export interface Section {
  name: string;
  title: string;
  /** One line each: the setup (model, network, runs). */
  setup: string[];
  header: string[];
  rows: (string | number)[][];
  targets: Target[];
  notes: string[];
}

export const mb = (bytes: number) => (bytes / 1e6).toFixed(bytes < 10e6 ? 2 : 0);
export const mbs = (bytes: number, secs: number) => (bytes / 1e6 / secs).toFixed(0);
export const pct = (x: number) => `${(x * 100).toFixed(x < 0.1 ? 1 : 0)} %`;
export const secs = (s: number) => s.toFixed(2);
export const mib = (m: number) => `${m.toFixed(0)} MiB`;

export function machine(): string {
  const cpu = os.cpus()[0]?.model.trim() ?? "unknown CPU";
  return `${os.cpus().length} cores (${cpu}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version}, ${os.platform()} ${os.release()}`;
}

export function render(s: Section): string {
  const lines = [`### ${s.title}`, "", ...s.setup.map((l) => `- ${l}`), ""];
  if (s.header.length) {
    lines.push(`| ${s.header.join(" | ")} |`, `|${s.header.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`);
    for (const r of s.rows) lines.push(`| ${r.join(" | ")} |`);
    lines.push("");
  }
  if (s.targets.length) {
    lines.push("| target | measured | |", "|---|---|---|");
    for (const t of s.targets) lines.push(`| ${t.what} | ${t.measured} | ${t.met ? "met" : "**missed**"} |`);
    lines.push("");
  }
  for (const n of s.notes) lines.push(n, "");
  return lines.join("\n");
}

const DOC = path.join(ROOT, "docs", "benchmarks.md");

/** The commit cake was measured at, and whether its source had uncommitted changes (dist/ is built from the tree). */
export async function revision(): Promise<string> {
  const head = await run("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT }).catch(() => undefined);
  if (!head || head.code !== 0) return "an unknown revision";
  const dirty = await run("git", ["status", "--porcelain", "--", "src", "cli", "proxy"], { cwd: ROOT });
  return `${head.stdout.trim()}${dirty.stdout.trim() ? " + uncommitted changes in src/cli/proxy" : ""}`;
}

/** Replaces (or appends) the section's marked block in docs/benchmarks.md. */
export async function writeSection(s: Section, rev: string): Promise<void> {
  const begin = `<!-- bench:${s.name} -->`;
  const end = `<!-- /bench:${s.name} -->`;
  const stamp = `_Measured ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC, cake at ${rev}, on ${machine()}._`;
  const block = `${begin}\n${render(s)}${stamp}\n${end}`;
  let doc = await fs.readFile(DOC, "utf8").catch(() => "# Benchmarks\n");
  const i = doc.indexOf(begin);
  const j = doc.indexOf(end);
  if (i >= 0 && j > i) doc = doc.slice(0, i) + block + doc.slice(j + end.length);
  else doc = `${doc.trimEnd()}\n\n${block}\n`;
  await fs.writeFile(DOC, doc);
}
