/** What every command shares: the store, the Hub settings, progress per --quiet. */
import { Store, hubParamsFromEnv, ttyProgress, silentProgress, type ProgressSink } from "../src/index.js";

export interface GlobalOpts {
  quiet?: boolean;
}

export const openStore = () => new Store();
export const hub = () => hubParamsFromEnv();

export function progressFor(opts: GlobalOpts, label: string, items: string): ProgressSink {
  return opts.quiet ? silentProgress : ttyProgress(label, items);
}

/** Status lines go to stderr unless --quiet; stdout carries results only. */
export function say(opts: GlobalOpts, line: string): void {
  if (!opts.quiet) process.stderr.write(line + "\n");
}

export function parsePositiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new Error(`not a positive integer (1-1024): ${v}`);
  return n;
}
