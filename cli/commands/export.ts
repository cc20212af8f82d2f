import fs from "node:fs";
import { Command } from "commander";
import { CakeError, canonicalRef, exportTo, exportToHfCache, hfHubCache, isHfRef, isOciLayout, isUnverified, parseHfRef, sourceFromDir, sourceFromLayout, sourceFromStore, userRef, type ArtifactSource } from "../../src/index.js";
import { looksLikePath, openStore, progressFor, say, storeHolding, warnUnverified } from "../context.js";

const isDir = (p: string) => fs.existsSync(p) && fs.statSync(p).isDirectory();

/** An OCI layout (`DIR` or `DIR:tag`) or a directory written by `oras pull` when the argument is one; else a store reference. */
export async function openSource(arg: string): Promise<ArtifactSource> {
  if (!isHfRef(arg) && isDir(arg)) return isOciLayout(arg) ? sourceFromLayout(arg) : sourceFromDir(arg);
  const tagged = /^(.+):([^/:]+)$/.exec(arg);
  if (!isHfRef(arg) && tagged && isDir(tagged[1]!) && isOciLayout(tagged[1]!)) return sourceFromLayout(tagged[1]!, tagged[2]!);
  if (looksLikePath(arg)) throw new CakeError("E_NOT_FOUND", `${arg}: no such directory`);
  return sourceFromStore(storeHolding(arg), arg);
}

/** What the summary line says of the files' hashes. */
const checked = (src: ArtifactSource, opts: { verify?: boolean }) =>
  opts.verify || !src.verified ? ", each hashed and matched against its sha256" : " (each matched its sha256 when the store checked it)";

export function exportCommand(): Command {
  return new Command("export")
    .description("rebuild the model's original files, byte for byte, from the store, an OCI layout (DIR or DIR:tag) or an oras-pulled directory")
    .usage("[options] <ref-or-dir> <out>\n       cake export [options] --hf-cache <ref-or-dir> [hub-cache]")
    .argument("<ref-or-dir>", "a model in the store (hf://org/name[@rev], host/repo:tag), an OCI layout (DIR or DIR:tag, as crane pull --format oci and skopeo copy write) or a folder written by oras pull", userRef)
    .argument("[out]", "required: a new or empty folder to write the files into (with --hf-cache: the hub cache, default $HF_HUB_CACHE)")
    .option("--hf-cache", "write into huggingface_hub's cache ($HF_HUB_CACHE, else $HF_HOME/hub; HF_HUB_OFFLINE=1 loads it)")
    .option("--force", "export into a folder that holds files already, replacing those of the same names")
    .option("--verify", "hash every file again against its sha256 (by default only files the store has not checked before are hashed)")
    .option("-q, --quiet", "no progress")
    .action(async (arg: string, out: string | undefined, opts: { hfCache?: boolean; verify?: boolean; force?: boolean; quiet?: boolean }) => {
      const src = await openSource(arg);
      // Exported all the same (every file is hashed against its recipe), but the recipe is the archive's word.
      if (isHfRef(arg) && isUnverified(await openStore().resolve(canonicalRef(arg)))) warnUnverified(canonicalRef(arg));
      const progress = progressFor(opts, `export ${arg}`, "files");
      if (opts.hfCache) {
        const s = src.config?.source;
        if (!s || s.type !== "hf") throw new CakeError("E_USAGE", `${arg}: --hf-cache needs a model pulled from the Hub (its commit names the snapshot)`);
        const revision = isHfRef(arg) ? parseHfRef(arg).revision : s.commit;
        // Said --quiet or not: a damaged blob in the cache is news, not progress.
        const warn = (line: string) => process.stderr.write(`cake: warning: ${line}\n`);
        const snap = await exportToHfCache(src, out ?? hfHubCache(), s.repo, s.commit, revision, { progress, warn, ...(opts.verify ? { verify: true } : {}) });
        say(opts, `${arg}: ${src.recipe.files.length} files in ${snap}${checked(src, opts)}`);
        process.stdout.write(`${snap}\n`);
        return;
      }
      if (!out) throw new CakeError("E_USAGE", `export needs a folder to write into: cake export ${arg} <out> (or --hf-cache)`);
      await exportTo(src, out, { progress, ...(opts.verify ? { verify: true } : {}), ...(opts.force ? { force: true } : {}) });
      say(opts, `${arg}: ${src.recipe.files.length} files written to ${out}${checked(src, opts)}`);
    });
}
