import { Command } from "commander";
import { formatBytes, storedBytes, userRef, type ModelConfig } from "../../src/index.js";
import { openStore } from "../context.js";
import { printJson, table } from "../output.js";
import { openSource } from "./export.js";

export function inspectCommand(): Command {
  return new Command("inspect")
    .description("the manifest and per-file / per-tensor table of a model (store reference or oras-pulled directory)")
    .argument("<ref-or-dir>", "a model in the store or a folder written by oras pull", userRef)
    .option("--json", "machine-readable output")
    .action(async (arg: string, opts: { json?: boolean }) => {
      const src = await openSource(arg);
      if (opts.json) return printJson({ ref: arg, manifestDigest: src.manifestDigest, manifest: src.manifest, config: src.config, recipe: src.recipe });
      const out = process.stdout;
      if (src.manifestDigest) out.write(`manifest  ${src.manifestDigest}\n`);
      if (src.manifest) {
        const total = src.manifest.layers.reduce((n, l) => n + l.size, 0);
        out.write(`type      ${src.manifest.artifactType}\nlayers    ${src.manifest.layers.length} (${formatBytes(total)})\n`);
        // A store reference: what its layers take on disk (less when stored compressed: cake compress).
        if (src.manifestDigest) out.write(`stored    ${formatBytes((await storedBytes(openStore(), src.manifest)).stored)}\n`);
      }
      const cfg: ModelConfig | undefined = src.config;
      if (cfg?.source.type === "hf") out.write(`source    hf://${cfg.source.repo}@${cfg.source.commit}\n`);
      out.write("\n");
      table([
        ["FILE", "SIZE", "FORMAT", "TENSORS", "SHA256"],
        ...src.recipe.files.map((f) => [f.path, formatBytes(f.size), f.header ? "safetensors" : "raw", String(cfg?.files.find((c) => c.path === f.path)?.tensors?.length ?? "-"), f.sha256.slice(0, 16)]),
      ]);
      if (!cfg) return;
      out.write("\n");
      table([
        ["TENSOR", "DTYPE", "SHAPE", "SIZE", "BLOB", "FILE"],
        ...cfg.files.flatMap((f) =>
          (f.tensors ?? []).map((t) => [t.name, t.dtype, `[${t.shape.join(",")}]`, formatBytes(t.size), `${t.digest.slice(7, 19)}+${t.offset}`, f.path]),
        ),
      ]);
    });
}
