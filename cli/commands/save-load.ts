import { Command } from "commander";
import { CakeError, formatBytes, loadArchive, saveArchive } from "../../src/index.js";
import { openStore, progressFor, say, storeHolding } from "../context.js";
import { count } from "../output.js";

export function saveCommand(): Command {
  return new Command("save")
    .description("write models from the store to an OCI archive (a tar `cake load` and `skopeo copy oci-archive:` read)")
    .usage("[options] <ref...> <archive.tar>")
    .argument("<ref...>", "store references, then the archive to write")
    .option("-q, --quiet", "no progress")
    .action(async (args: string[], opts: { quiet?: boolean }) => {
      if (args.length < 2) throw new CakeError("E_USAGE", "save needs a reference and the archive to write: cake save <ref...> <archive.tar>");
      const out = args[args.length - 1]!;
      const r = await saveArchive(storeHolding(args[0]!), args.slice(0, -1), out, { progress: progressFor(opts, `save ${out}`, "blobs") });
      say(opts, `${out}: ${r.refs.join(", ")} (${count(r.blobs, "blob")}, ${formatBytes(r.bytes)})`);
    });
}

export function loadCommand(): Command {
  return new Command("load")
    .description("load an OCI archive (from `cake save` or `skopeo copy … oci-archive:`) into the store, each blob checked against its digest")
    .argument("<archive.tar>")
    .option("--trust", "take the archive's Hub references as checked, replacing what the store holds under them")
    .option("-q, --quiet", "no progress")
    .action(async (archive: string, opts: { quiet?: boolean; trust?: boolean }) => {
      const r = await loadArchive(openStore(), archive, { progress: progressFor(opts, `load ${archive}`, "blobs"), ...(opts.trust ? { trust: true } : {}) });
      for (const t of r.tagged) process.stdout.write(`${t.ref} ${t.digest}\n`);
      const unverified = r.tagged.filter((t) => t.unverified).map((t) => t.ref);
      if (unverified.length) say(opts, `${archive}: ${unverified.join(", ")} not checked against the Hub yet: cake pull checks them online (cake load --trust takes them as they are)`);
      for (const u of r.untagged) {
        say(opts, `${archive}: manifest ${u.digest} ${u.name === undefined ? "has no name" : `is named ${JSON.stringify(u.name)}, not a reference`}; loaded, not tagged`);
      }
      say(opts, `${archive}: ${count(r.tagged.length, "model")}, ${count(r.blobs, "new blob")} (${formatBytes(r.bytes)}), ${r.reused} already in the store`);
    });
}
