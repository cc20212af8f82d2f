import { Command, Option } from "commander";
import { CakeError, checkIndexPrefix, compressByDefault, compressModel, DEFAULT_CONCURRENCY, formatBytes, isHfRef, parseHfRef, pullFromRegistry, pullHf, userRef, type TransferStats } from "../../src/index.js";
import { compressLine } from "./compress.js";
import { accessFrom, hub, openStore, parsePositiveInt, progressFor, say, warnIfOffline, withRegistryOptions, type AccessOpts } from "../context.js";

/**
 * `cake pull acme/tiny-llama`: a name without a registry host would be asked of Docker Hub (as
 * docker reads it), which is rarely what a model's name means: say what it probably means instead.
 */
function refuseImplicitDockerHub(ref: string): void {
  if (isHfRef(ref)) return;
  const slash = ref.indexOf("/");
  const first = slash >= 0 ? ref.slice(0, slash) : "";
  if (first.includes(".") || first.includes(":") || first === "localhost") return;
  const name = ref.replace(/@.*$/, "");
  const tag = /^([^:]+):([^:]+)$/.exec(name);
  const hf = tag ? `hf://${tag[1]}@${tag[2]}` : `hf://${name}`;
  throw new CakeError("E_REF", `${ref}: no registry named: did you mean ${hf}? (Docker Hub: docker.io/${ref})`);
}

export function pullCommand(): Command {
  const cmd = new Command("pull")
    .description("fetch a model into the local store: hf://org/name[@revision] or host/repo[:tag|@digest] (a cake, CNCF ModelPack, Docker Model Runner or KitOps artifact)")
    .argument("<ref>", "hf://org/name[@revision] (or the model's Hub page address) or host/repo[:tag|@digest]", userRef)
    .option("-c, --concurrency <n>", "parallel requests for the whole model (default: 16, and more while they raise the rate)", parsePositiveInt)
    .option("-q, --quiet", "no progress")
    .option("--compress", "keep the model's layers compressed in the store (default when CAKE_COMPRESS=1; see cake compress)")
    .option("--index <registry/prefix>", "hf:// only: a registry of index artifacts (cake index push) to learn the units from (default $CAKE_INDEX)")
    .addOption(new Option("--chunk-size <bytes>", "split blobs bigger than this into parallel Range requests").argParser(Number).hideHelp());
  return withRegistryOptions(cmd).action(async (ref: string, opts: AccessOpts & { concurrency?: number; chunkSize?: number; quiet?: boolean; index?: string; compress?: boolean }) => {
    refuseImplicitDockerHub(ref);
    const store = openStore();
    // After the pull has verified and tagged it: each layer compressed on its own, crash-safe.
    const compressing = opts.compress || compressByDefault();
    const compress = async (pulled: string) => {
      if (compressing) say(opts, compressLine(pulled, await compressModel(store, pulled)));
    };
    const common = {
      store,
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
      ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
      progress: progressFor(opts, `pull ${ref}`, isHfRef(ref) ? "tensors" : "blobs"),
    };
    if (isHfRef(ref)) {
      const prefix = opts.index ?? (process.env.CAKE_INDEX || undefined);
      const index = prefix ? { prefix: checkIndexPrefix(prefix, opts.index ? "--index" : "CAKE_INDEX"), access: await accessFrom(opts) } : undefined;
      const r = await pullHf(parseHfRef(ref), { ...common, hub: hub(), ...(compressing ? { compress: true } : {}), ...(index ? { index } : {}), onNotice: (line) => say(opts, `cake: ${line}`) });
      if (r.replaced) say(opts, `${r.ref}: the store's copy (${r.replaced}, loaded from an archive) is not the Hub's commit ${r.commit}; replaced by the Hub's`);
      if (!warnIfOffline(r)) say(opts, r.upToDate ? `${r.ref}: up to date (${r.commit})${r.confirmed ? "; the copy loaded from an archive matches the Hub's files" : ""}` : `${r.ref}: pulled commit ${r.commit}`);
      const reuse = r.reuse;
      if (reuse && reuse.byIndex > 0) {
        say(opts, `${r.ref}: ${reuse.tensors} tensors (${formatBytes(reuse.bytes)}) taken from the store as ${reuse.models.join(", ")} names them, checked by each file's sha256; ${formatBytes(r.stats.fetchedBytes)} fetched from the Hub`);
      } else if (reuse && reuse.sampled > 0) {
        const from = reuse.models.length ? ` from ${reuse.models.join(", ")}` : "";
        say(
          opts,
          `${r.ref}: ${reuse.tensors} tensors (${formatBytes(reuse.bytes)}) taken from the store${from}: ${reuse.blobs} of ${reuse.sampled} sampled blobs matched, ` +
            `checked by ${formatBytes(reuse.windowBytes)} of samples and each file's sha256` +
            (reuse.wrongFiles ? ` (${reuse.wrongFiles} file${reuse.wrongFiles === 1 ? "" : "s"} fetched again: the samples matched, the file's sha256 did not)` : "") +
            `; ${formatBytes(r.stats.fetchedBytes)} fetched from the Hub`,
        );
      }
      sayStreams(opts, r.ref, r.stats);
      await compress(r.ref);
      process.stdout.write(`${r.manifestDigest}\n`);
      return;
    }
    const r = await pullFromRegistry(ref, { ...common, ...(await accessFrom(opts)), onNotice: (line) => say(opts, `cake: ${line}`) });
    const c = r.converted;
    if (!c) say(opts, `${r.ref}: ${r.blobs - r.stats.skippedBlobs} of ${r.blobs} blobs fetched (${formatBytes(r.stats.fetchedBytes)})`);
    else if (c.upToDate) say(opts, `${r.ref}: up to date (${c.kind} artifact ${c.source})`);
    else {
      const reused = c.reused.tensors ? `; ${c.reused.tensors} tensors (${formatBytes(c.reused.bytes)}) taken from the store (${c.reused.models.join(", ")}), checked by each file's sha256` : "";
      say(opts, `${r.ref}: ${c.kind} artifact ${c.source} stored as a cake model: ${c.files} files, ${formatBytes(r.stats.fetchedBytes)} fetched${reused}`);
    }
    sayStreams(opts, r.ref, r.stats);
    await compress(r.ref);
    process.stdout.write(`${r.manifestDigest}\n`);
  });
}

/** Says so when the transfer took more streams than the default because they raised the rate (src/transfer/ramp.ts). */
function sayStreams(opts: { quiet?: boolean }, ref: string, stats: TransferStats): void {
  if (stats.streams && stats.streams > DEFAULT_CONCURRENCY) {
    say(opts, `${ref}: fetched over ${stats.streams} streams: more than ${DEFAULT_CONCURRENCY} raised the rate (--concurrency fixes their number)`);
  }
}
