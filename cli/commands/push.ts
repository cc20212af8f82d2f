import fs from "node:fs";
import { Command, Option } from "commander";
import { CakeError, canonicalRef, importDir, isHfRef, parseHfRef, pullHf, pushToRegistry, Store, formatHfRef, userRef, PUSH_FORMATS, type PushFormat } from "../../src/index.js";
import { count, formatBytes } from "../output.js";
import { accessFrom, hub, looksLikePath, openStore, parsePositiveInt, progressFor, say, warnIfOffline, withRegistryOptions, type AccessOpts } from "../context.js";

/**
 * The store reference to push: a folder is imported, a Hub model pulled (if needed; the store's copy
 * when HF_HUB_OFFLINE is set or the Hub cannot be reached), else the store ref itself.
 */
async function storeRefFor(src: string, dest: string, store: Store, opts: { quiet?: boolean; concurrency?: number }): Promise<string> {
  if (isHfRef(src)) return pulledHfRef(src, store, opts);
  if (fs.existsSync(src) && fs.statSync(src).isDirectory()) {
    // Like `docker build -t`: the imported folder is known in the store by the name it is pushed to.
    const ref = canonicalRef(dest);
    await importDir(src, store, { progress: progressFor(opts, `import ${src}`, "blobs"), tag: ref });
    return ref;
  }
  if (looksLikePath(src)) throw new CakeError("E_NOT_FOUND", `${src}: no such folder (push takes a folder of safetensors, hf://org/name[@rev] or a store reference)`);
  return canonicalRef(src);
}

/** A Hub revision in the store, by commit: pulled (or checked up to date) first, the store's copy offline. */
export async function pulledHfRef(src: string, store: Store, opts: { quiet?: boolean; concurrency?: number }): Promise<string> {
  const ref = parseHfRef(src);
  const r = await pullHf(ref, { store, hub: hub(), progress: progressFor(opts, `pull ${src}`, "blobs"), ...(opts.concurrency ? { concurrency: opts.concurrency } : {}) });
  warnIfOffline(r);
  return formatHfRef({ repo: ref.repo, revision: r.commit });
}

export function pushCommand(): Command {
  const cmd = new Command("push")
    .description("push a model to an OCI registry: from a local folder, hf://org/name[@rev] (via the store), or a store reference")
    .argument("<source>", "folder | hf://org/name[@rev] | store reference", userRef)
    .argument("<dest>", "host[:port]/repo[:tag]")
    .option("-c, --concurrency <n>", "blobs uploaded at once (default 16)", parsePositiveInt)
    .option("-q, --quiet", "no progress")
    .addOption(new Option("--format <format>", "cake: one layer per tensor (dedup); modelpack: CNCF ModelPack, one layer per file, assembled from the store").choices(PUSH_FORMATS).default("cake"))
    .addOption(new Option("--chunk-size <bytes>", "first PATCH size for chunked uploads").argParser(Number).hideHelp());
  return withRegistryOptions(cmd).action(async (src: string, dest: string, opts: AccessOpts & { concurrency?: number; chunkSize?: number; quiet?: boolean; format: PushFormat }) => {
    const store = openStore();
    const storeRef = await storeRefFor(src, dest, store, opts);
    const r = await pushToRegistry(storeRef, dest, {
      store,
      ...(await accessFrom(opts)),
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
      ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
      progress: progressFor(opts, `push ${dest}`, "blobs"),
      format: opts.format,
    });
    say(opts, `${r.ref}: ${count(r.counts.uploaded, "blob")} uploaded (${formatBytes(r.uploadedBytes)}), ${r.counts.mounted} mounted, ${r.counts.exists} already there`);
    process.stdout.write(`${r.manifestDigest}\n`);
  });
}
