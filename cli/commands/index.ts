import { Command } from "commander";
import { CakeError, checkIndexPrefix, isHfRef, pushModelIndex, userRef } from "../../src/index.js";
import { accessFrom, openStore, parsePositiveInt, say, withRegistryOptions, type AccessOpts } from "../context.js";
import { formatBytes } from "../output.js";
import { pulledHfRef } from "./push.js";

/** `cake index …`: index artifacts (a revision's config + recipe, tagged by commit) on a registry. */
export function indexCommand(): Command {
  return new Command("index").description("index artifacts on a registry: a Hub revision's units and digests, no tensor bytes").addCommand(indexPushCommand());
}

function indexPushCommand(): Command {
  const cmd = new Command("push")
    .description("publish the index of hf://org/name[@rev] (pulled first if the store lacks it) as REGISTRY/prefix/<org>/<name>:<commit>")
    .argument("<source>", "hf://org/name[@rev]", userRef)
    .argument("<prefix>", "REGISTRY/prefix, e.g. localhost:5000/index")
    .option("-c, --concurrency <n>", "parallel requests if the model must be pulled first (default: 16, and more while they raise the rate)", parsePositiveInt)
    .option("-q, --quiet", "no progress");
  return withRegistryOptions(cmd).action(async (src: string, prefix: string, opts: AccessOpts & { concurrency?: number; quiet?: boolean }) => {
    if (!isHfRef(src)) throw new CakeError("E_USAGE", `${src}: an index is of a Hub revision: want hf://org/name[@rev]`);
    const checked = checkIndexPrefix(prefix, "index prefix");
    const store = openStore();
    const storeRef = await pulledHfRef(src, store, opts);
    const r = await pushModelIndex(storeRef, checked, { store, ...(await accessFrom(opts)) });
    say(opts, `${r.ref}: index of ${storeRef} pushed (${formatBytes(r.bytes)})`);
    process.stdout.write(`${r.manifestDigest}\n`);
  });
}
