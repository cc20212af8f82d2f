import { Command } from "commander";
import { listModels } from "../../src/index.js";
import { openStore } from "../context.js";
import { formatBytes, printJson, table } from "../output.js";

export function lsCommand(): Command {
  return new Command("ls")
    .description("models in the local store")
    .option("--json", "machine-readable output")
    .action(async (opts: { json?: boolean }) => {
      const models = await listModels(openStore());
      if (opts.json) return printJson(models);
      table([
        ["REF", "COMMIT", "FILES", "TENSORS", "SIZE", "STORED", "DIGEST"],
        ...models.map((m) => [m.unverified ? `${m.ref} (unverified)` : m.ref, m.commit?.slice(0, 12) ?? "-", String(m.files), String(m.tensors), formatBytes(m.bytes), formatBytes(m.stored), m.digest.slice(0, 19)]),
      ]);
    });
}
