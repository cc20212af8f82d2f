/** Printing for the CLI: aligned tables, JSON, byte sizes. */
export { formatBytes } from "../src/index.js";

/** "1 model", "2 models": a count and its noun, plural but for one. */
export const count = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? "" : "s"}`;

export function table(rows: string[][], out: NodeJS.WritableStream = process.stdout): void {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  for (const r of rows) out.write(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ") + "\n");
}

export function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + "\n");
}
