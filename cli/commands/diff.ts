import { Command } from "commander";
import { diffModels, formatBytes, userRef } from "../../src/index.js";
import { accessFrom, openStore, withRegistryOptions, type AccessOpts } from "../context.js";
import { printJson, table } from "../output.js";

export function diffCommand(): Command {
  const cmd = new Command("diff")
    .description("shared / changed / new tensors and bytes between two models (store or registry; reads configs only)")
    .argument("<a>", "a model (store or registry reference)", userRef)
    .argument("<b>", "the model to compare with a", userRef)
    .option("--json", "machine-readable output")
    .option("--names", "list the changed, new and removed tensor names");
  return withRegistryOptions(cmd).action(async (a: string, b: string, opts: AccessOpts & { json?: boolean; names?: boolean }) => {
    const d = await diffModels(a, b, openStore(), await accessFrom(opts));
    if (opts.json) return printJson(d);
    const row = (label: string, c: { tensors: number; bytes: number }) => [label, String(c.tensors), formatBytes(c.bytes)];
    table([["", "TENSORS", "BYTES"], row("shared", d.shared), row("changed", d.changed), row("new", d.added), row("removed", d.removed)]);
    process.stdout.write(`\npulling ${b} next to ${a} transfers ${formatBytes(d.transferBytes)} of ${formatBytes(d.totalBytes)}\n`);
    if (opts.names) {
      for (const [label, c] of [["changed", d.changed], ["new", d.added], ["removed", d.removed]] as const) for (const n of c.names) process.stdout.write(`${label}\t${n}\n`);
    }
  });
}
