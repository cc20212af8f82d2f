import { Command } from "commander";
import { compressModel, formatBytes, type CompressResult, type Store } from "../../src/index.js";
import { openStore, say } from "../context.js";

/** `ref: 12 of 14 layers compressed, 2 kept as they are; 1.2 GB -> 812 MB (67 %)`. */
export function compressLine(ref: string, r: CompressResult, decompress = false): string {
  const pct = r.rawBytes ? ` (${Math.round((100 * r.storedBytes) / r.rawBytes)} %)` : "";
  const kept = r.keptRaw ? `, ${r.keptRaw} kept as they are (compression would not make them smaller)` : "";
  return `${ref}: ${r.changed} of ${r.blobs} layers ${decompress ? "decompressed" : "compressed"} now${kept}; stored ${formatBytes(r.storedBytes)} of ${formatBytes(r.rawBytes)}${pct}`;
}

/** The references the command names, or every model in the store. */
async function refsOf(store: Store, refs: string[]): Promise<string[]> {
  return refs.length ? refs : (await store.tags()).map((t) => t.ref);
}

function convertCommand(name: "compress" | "decompress"): Command {
  const decompress = name === "decompress";
  return new Command(name)
    .description(
      decompress
        ? "store the models' layers as they are again (what skopeo and oras read from $CAKE_HOME); all models when none is named"
        : "keep the models' layers compressed in the store (lossless; about 2/3 the size for BF16 weights); all models when none is named",
    )
    .argument("[refs...]")
    .option("-q, --quiet", "say nothing")
    .action(async (refs: string[], opts: { quiet?: boolean }) => {
      const store = openStore();
      for (const ref of await refsOf(store, refs)) say(opts, compressLine(ref, await compressModel(store, ref, { decompress }), decompress));
    });
}

export const compressCommand = () => convertCommand("compress");
export const decompressCommand = () => convertCommand("decompress");
