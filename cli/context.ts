/** What every command shares: the store, the Hub settings, progress per --quiet. */
import fs from "node:fs";
import { InvalidArgumentError, type Command } from "commander";
import { CakeError, Store, hubParamsFromEnv, ttyProgress, silentProgress, type HubParams, type ProgressSink, type RegistryAccess } from "../src/index.js";

export interface GlobalOpts {
  quiet?: boolean;
}

export const openStore = () => new Store();

/** The store, for a command that only reads `ref` from it: one not created yet holds nothing, and is not created by asking. */
export function storeHolding(ref: string): Store {
  const store = openStore();
  if (!fs.existsSync(store.root)) throw new CakeError("E_NOT_FOUND", `${ref}: not in the store ${store.root} (run: cake pull ${ref})`);
  return store;
}
/** The Hub settings from the environment; a found token the Hub refuses is said once on stderr (--quiet or not). */
export function hub(): HubParams {
  const params = hubParamsFromEnv();
  if (params.found) params.found.onRefused = (line) => process.stderr.write(`cake: warning: ${line}\n`);
  return params;
}

export function progressFor(opts: GlobalOpts, label: string, items: string): ProgressSink {
  return opts.quiet ? silentProgress : ttyProgress(label, items);
}

/** Status lines go to stderr unless --quiet; stdout carries results only. */
export function say(opts: GlobalOpts, line: string): void {
  if (!opts.quiet) process.stderr.write(line + "\n");
}

/**
 * A Hub pull that used the store's copy (HF_HUB_OFFLINE, or the Hub unreachable) says so on stderr,
 * --quiet or not, as huggingface_hub warns when it falls back to its cache. True when it did.
 */
export function warnIfOffline(r: { offline?: string; ref: string; commit: string; unverified?: boolean }): boolean {
  if (r.offline) process.stderr.write(`cake: warning: ${r.offline}; using ${r.ref} as the store has it (commit ${r.commit})\n`);
  if (r.unverified) warnUnverified(r.ref);
  return r.offline !== undefined;
}

/** A Hub reference loaded from an archive and not confirmed by the Hub: said on stderr, --quiet or not. */
export function warnUnverified(ref: string): void {
  process.stderr.write(`cake: warning: ${ref} was loaded from an archive and is not checked against the Hub yet; run cake pull ${ref} online to check it\n`);
}

/** `--port`: 0 (any free port) to 65535. */
export function parsePort(v: string): number {
  if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw new InvalidArgumentError(`not a port (0-65535): ${v}`);
  return Number(v);
}

/** An http:// or https:// address (a Hub, a proxy). */
export function parseHttpUrl(v: string): string {
  if (!URL.canParse(v) || !/^https?:$/.test(new URL(v).protocol)) throw new InvalidArgumentError(`not an http:// or https:// URL: ${v}`);
  return v;
}

/** A path as a user writes one (`./x`, `../x`, `/x`, `~/x`), never a reference. */
export const looksLikePath = (s: string): boolean => /^(\.{0,2}\/|~)/.test(s);

export function parsePositiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new InvalidArgumentError(`not a positive integer (1-1024): ${v}`);
  return n;
}

export interface AccessOpts {
  plainHttp?: boolean;
  username?: string;
  password?: string;
  passwordStdin?: boolean;
}

/** The registry options docker and oras users expect, on any command that talks to a registry. */
export function withRegistryOptions(cmd: Command): Command {
  return cmd
    .option("--plain-http", "use HTTP, not HTTPS (automatic for localhost and 127.0.0.0/8)")
    .option("-u, --username <user>", "registry user (default: from the docker config)")
    .option("-p, --password <password>", "registry password or token")
    .option("--password-stdin", "read the password from standard input");
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
}

export async function accessFrom(opts: AccessOpts): Promise<RegistryAccess> {
  const password = opts.passwordStdin ? await readStdin() : opts.password;
  return {
    ...(opts.plainHttp ? { plainHttp: true } : {}),
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(password !== undefined ? { password } : {}),
  };
}
