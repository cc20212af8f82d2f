import { Command, Option } from "commander";
import { isHfRef, parseHfRef, pullHf, CakeError } from "../../src/index.js";
import { hub, openStore, parsePositiveInt, progressFor, say } from "../context.js";

export function pullCommand(): Command {
  return new Command("pull")
    .description("fetch a model into the local store: hf://org/name[@revision] or host/repo[:tag|@digest]")
    .argument("<ref>")
    .option("-c, --concurrency <n>", "parallel requests for the whole model", parsePositiveInt)
    .option("-q, --quiet", "no progress")
    .addOption(new Option("--chunk-size <bytes>", "split blobs bigger than this into parallel Range requests").argParser(Number).hideHelp())
    .action(async (ref: string, opts: { concurrency?: number; chunkSize?: number; quiet?: boolean }) => {
      if (!isHfRef(ref)) throw new CakeError("E_REF", `${ref}: registry pulls are not available yet; use hf://org/name`);
      const store = openStore();
      const r = await pullHf(parseHfRef(ref), {
        store,
        hub: hub(),
        ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
        ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
        progress: progressFor(opts, `pull ${ref}`, "blobs"),
      });
      say(opts, r.upToDate ? `${r.ref}: up to date (${r.commit})` : `${r.ref}: pulled commit ${r.commit}`);
      process.stdout.write(`${r.manifestDigest}\n`);
    });
}
