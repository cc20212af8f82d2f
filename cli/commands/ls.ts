import { Command } from "commander";
import { isHfRef, listModels, type ModelSummary } from "../../src/index.js";
import { openStore } from "../context.js";
import { formatBytes, printJson, table } from "../output.js";

/**
 * A Hub pull tags the revision asked for and its commit (hf://org/m@main and hf://org/m@<sha>): one
 * model, listed once, by the revision, the commit in its own column. A commit tag alone is listed.
 */
export function onePerModel(models: ModelSummary[]): ModelSummary[] {
  const byCommit = (m: ModelSummary) => `${m.ref.replace(/@[^@]*$/, `@${m.commit}`)} ${m.digest}`;
  const isCommitTag = (m: ModelSummary) => isHfRef(m.ref) && m.commit !== undefined && m.ref.endsWith(`@${m.commit}`);
  const named = new Set(models.filter((m) => isHfRef(m.ref) && m.commit !== undefined && !isCommitTag(m)).map(byCommit));
  return models.filter((m) => !(isCommitTag(m) && named.has(`${m.ref} ${m.digest}`)));
}

export function lsCommand(): Command {
  return new Command("ls")
    .description("models in the local store (a Hub model once, by the revision pulled, its commit beside it; --json: every tag)")
    .option("--json", "machine-readable output")
    .action(async (opts: { json?: boolean }) => {
      const all = await listModels(openStore());
      // --json is every tag, each with its commit: what scripts look refs up in.
      if (opts.json) return printJson(all);
      const models = onePerModel(all);
      table([
        ["REF", "COMMIT", "FILES", "TENSORS", "SIZE", "STORED", "DIGEST"],
        ...models.map((m) => [m.unverified ? `${m.ref} (unverified)` : m.ref, m.commit?.slice(0, 12) ?? "-", String(m.files), String(m.tensors), formatBytes(m.bytes), formatBytes(m.stored), m.digest.slice(0, 19)]),
      ]);
    });
}
