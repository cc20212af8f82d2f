/** bench/hub-server.ts as a child of the bench: the Hub emulation serving from its own process. */
import { spawn } from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import type { HubKnobs } from "../../test/hub/emulator.js";
import { ROOT, type Scratch } from "./proc.js";

export interface HubProcess {
  url: string;
  setKnobs(k: HubKnobs): Promise<void>;
}

/** `tls`: a folder with key.pem and cert.pem, for a CDN that answers over TLS. */
export async function startHubProcess(scratch: Scratch, repo: string, dir: string, tls?: string): Promise<HubProcess> {
  const args = [path.join(ROOT, "dist", "bench", "hub-server.js"), repo, dir, ...(tls ? [tls] : [])];
  const child = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "inherit"] });
  scratch.defer(async () => {
    child.stdin.end();
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once("exit", r)));
  });
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const r = await lines.next();
    if (r.done) throw new Error("bench/hub-server.js exited");
    return r.value;
  };
  const { url } = JSON.parse(await next()) as { url: string };
  return {
    url,
    async setKnobs(k) {
      child.stdin.write(`${JSON.stringify(k)}\n`);
      if ((await next()) !== "ok") throw new Error("bench/hub-server.js did not take the knobs");
    },
  };
}
