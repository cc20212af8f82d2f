import { Command } from "commander";
import { formatBytes, removeModel } from "../../src/index.js";
import { openStore, say } from "../context.js";

export function rmCommand(): Command {
  return new Command("rm")
    .description("remove references from the store (blobs stay until `cake gc`)")
    .argument("<refs...>")
    .option("-q, --quiet", "say nothing")
    .action(async (refs: string[], opts: { quiet?: boolean }) => {
      const store = openStore();
      for (const ref of refs) say(opts, `removed ${(await removeModel(store, ref)).join(", ")}`);
    });
}

export function gcCommand(): Command {
  return new Command("gc")
    .description("delete blobs no model in the store uses; shared blobs stay")
    .option("-q, --quiet", "say nothing")
    .action(async (opts: { quiet?: boolean }) => {
      const r = await openStore().gc();
      say(opts, `gc: removed ${r.removed} blobs (${formatBytes(r.bytes)}), kept ${r.kept}`);
    });
}
